-- Run by tests/run.sh: nvim --headless -l check.lua FILE LINE COL
local file, line, col = arg[1], tonumber(arg[2]), tonumber(arg[3])

local function fail(msg)
  io.stderr:write('FAIL: ' .. msg .. '\n')
  os.exit(1)
end

vim.cmd('filetype on')
vim.o.virtualedit = 'onemore'  -- let the cursor sit after a line's last character, as in insert mode
vim.cmd.runtime('plugin/deepseek.lua')
local ds = require('deepseek')
ds.setup({ cmd = { os.getenv('DEEPSEEK_LSP') or 'deepseek-lsp' }, auto = false,
           settings = { chat = { maxTokens = 48 }, completion = { manualMaxTimeMs = 60000 } } })
vim.cmd.edit(file)

if not vim.wait(30000, function() return ds.client(0) ~= nil end, 100) then fail('the server did not attach') end
local client = ds.client(0)
local loaded = vim.wait(180000, function()
  local r = client:request_sync('workspace/executeCommand', { command = 'deepseek.status' }, 5000, 0)
  return r and r.result and r.result.model and r.result.model.state ~= 'not-loaded' and r.result.model.state ~= 'loading'
    and r.result.model.state ~= 'preparing'
end, 500)
if not loaded then fail('the model did not load') end

-- A suggestion at the hole, shown as virtual text.
local inline = require('deepseek.inline')
vim.api.nvim_win_set_cursor(0, { line, col })
inline.request(true)
if not vim.wait(120000, function() return inline.current(0) ~= nil end, 50) then fail('no suggestion arrived') end
local text = inline.current(0)
local ns = vim.api.nvim_get_namespaces()['deepseek.inline']
local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
if #marks ~= 1 then fail('expected one extmark, got ' .. #marks) end
local shown = marks[1][4].virt_text[1][1]
if shown ~= vim.split(text, '\n')[1] or marks[1][2] ~= line - 1 or marks[1][3] ~= col then
  fail('the virtual text is not the suggestion at the cursor: ' .. vim.inspect(marks[1]))
end
if not vim.startswith(text, 'self._user_media_dir(') then fail('unexpected suggestion: ' .. text) end
print('suggestion: ' .. text)

-- Accepting inserts it.
inline.accept()
local accepted = vim.api.nvim_buf_get_lines(0, line - 1, line, false)[1]
if accepted ~= '        return ' .. vim.split(text, '\n')[1] then fail('accept wrote: ' .. accepted) end
if #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {}) ~= 0 then fail('the ghost text stayed after accepting') end

-- A chat reply streams into the chat buffer.
local chat = require('deepseek.chat')
chat.send('In one sentence: what does user_music_dir return?')
if not vim.wait(180000, function() return chat.session ~= nil end, 100) then fail('no chat reply') end
vim.wait(500, function() return false end)  -- let the last streamed pieces land
local lines = vim.api.nvim_buf_get_lines(chat.bufnr, 0, -1, false)
local body = table.concat(lines, '\n')
local reply = body:match('## You: [^\n]*\n\n(.+)')
if not reply or #vim.trim(reply) < 10 then fail('the chat buffer holds no reply: ' .. body) end
print('chat: ' .. vim.trim(reply):gsub('\n', ' '):sub(1, 120))
-- :checkhealth deepseek reports the server, the model and the memory.
vim.cmd('checkhealth deepseek')
local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
for _, want in ipairs({ 'server found', 'model qwen2.5-coder-0.5b-instruct-q4_k_m (qwen2.5-coder) loaded', 'RAM:' }) do
  if not report:find(want, 1, true) then fail('checkhealth lacks "' .. want .. '":\n' .. report) end
end
print('health: ok')
vim.lsp.stop_client(client.id)
os.exit(0)
