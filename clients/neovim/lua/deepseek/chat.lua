-- The chat buffer: a split that shows replies as they stream (deepseek/chatDelta, only those of the
-- session being written), and the code blocks of the replies: insert, copy, apply (previewed as a diff).
-- While a question is typed and after each answer the server reads the next prompt ahead (ahead.lua).
local M = { bufnr = nil, session = nil }
local streaming = nil   -- the request being answered: { session = id or nil (a new one) }
local targets = {}      -- chat buffer line of a question's heading -> the selection it was about

local function buffer()
  if M.bufnr and vim.api.nvim_buf_is_valid(M.bufnr) then return M.bufnr end
  M.bufnr = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_name(M.bufnr, 'deepseek://chat')
  vim.bo[M.bufnr].filetype = 'markdown'
  targets = {}
  return M.bufnr
end

--- Open the chat split (once) and return its buffer.
function M.open()
  local bufnr = buffer()
  if vim.fn.bufwinid(bufnr) == -1 then
    local current = vim.api.nvim_get_current_win()
    vim.cmd('botright vsplit')
    vim.api.nvim_win_set_buf(0, bufnr)
    vim.api.nvim_set_current_win(current)
  end
  return bufnr
end

local function append(text)
  local bufnr = buffer()
  local last = vim.api.nvim_buf_line_count(bufnr)
  local tail = vim.api.nvim_buf_get_lines(bufnr, last - 1, last, false)[1] or ''
  local lines = vim.split(tail .. text, '\n', { plain = true })
  vim.api.nvim_buf_set_lines(bufnr, last - 1, last, false, lines)
end

--- Append `text` to the chat buffer (its last line continues; a line break starts a new one).
M.append = append

--- `path:line` of each reference ({uri, range}), comma-separated.
local function reference_list(references)
  local refs = {}
  for _, r in ipairs(references) do
    if type(r) == 'table' and type(r.uri) == 'string' and type(r.range) == 'table' then
      refs[#refs + 1] = string.format('%s:%d', vim.uri_to_fname(r.uri), r.range.start.line + 1)
    end
  end
  return table.concat(refs, ', ')
end

--- A streamed piece of a reply (the server's deepseek/chatDelta notification): appended when it
--- belongs to the session being answered (a new session's id is learnt from its first piece).
--- A chat's first piece carries the references (the code the answer is given, shown before the model
--- reads its prompt); a long prompt's reading is echoed (`prompt = {read, total}`).
function M.on_delta(params)
  if type(params) ~= 'table' or type(params.delta) ~= 'string' or not streaming then return end
  if streaming.session == nil then streaming.session = params.sessionId end
  if params.sessionId ~= streaming.session then return end
  if type(params.references) == 'table' and #params.references > 0 then
    streaming.references = true
    local refs = reference_list(params.references)
    vim.schedule(function() append('Using: ' .. refs .. '\n\n') end)
  end
  local read = params.prompt
  if type(read) == 'table' and type(read.read) == 'number' and type(read.total) == 'number' and read.total > 0 then
    vim.schedule(function()
      vim.api.nvim_echo({ { string.format('deepseek: reading the question and its context, %d%% of %d tokens',
        math.floor(100 * read.read / read.total), read.total) } }, false, {})
    end)
  end
  if params.delta ~= '' then vim.schedule(function() append(params.delta) end) end
end

--- Start showing a reply: its deltas are appended; `session` nil for a new session (Explain), false: stop.
function M.begin(session) streaming = session ~= false and { session = session } or nil end

function M.heading(text)
  append('\n\n## ' .. text .. '\n\n')
  return vim.api.nvim_buf_line_count(buffer()) - 3  -- 0-based line of the heading
end

--- Tell the server what the next question will be about (deepseek/assistAhead, :help deepseek-read-ahead):
--- `bufnr` (default: the current buffer) and `range` in it (nil: no selection), in the current session,
--- starting as `draft` (optional). True when it was sent.
function M.ahead(range, bufnr, draft)
  return require('deepseek.ahead').chat(bufnr or vim.api.nvim_get_current_buf(), range, M.session, draft)
end

--- :DeepSeekChat without a message: open the chat split, have the server read the question's prompt
--- (up to the question) while it is typed, and the message so far at each pause of 500 ms (Neovim's
--- own input() prompt: |CmdlineChanged|), then send it.
function M.ask(range)
  local source = vim.api.nvim_get_current_buf()
  M.open()
  M.ahead(range, source)
  local pause = vim.uv.new_timer()
  local group = vim.api.nvim_create_augroup('deepseek.chat.draft', { clear = true })
  vim.api.nvim_create_autocmd('CmdlineChanged', { group = group, pattern = '@', callback = function()
    local draft = vim.fn.getcmdline()
    pause:stop()
    pause:start(500, 0, vim.schedule_wrap(function() M.ahead(range, source, draft) end))
  end })
  vim.ui.input({ prompt = 'deepseek> ' }, function(message)
    pause:stop()
    pause:close()
    pcall(vim.api.nvim_del_augroup_by_id, group)
    if message and message ~= '' then M.send(message, range) end
  end)
end

--- Send a message (with the current selection when `range` is given) and keep the session.
--- `on_done(result)` runs when the reply is complete (tests).
function M.send(message, range, on_done)
  local client = require('deepseek').client(0)
  if not client then return vim.notify('deepseek: the server is not running here', vim.log.levels.WARN) end
  local source = vim.api.nvim_get_current_buf()
  M.open()
  local heading = M.heading('You: ' .. message)
  if range then
    targets[heading] = { bufnr = source, range = range, tick = vim.api.nvim_buf_get_changedtick(source) }
  end
  M.begin(M.session)
  local arg = { message = message, sessionId = M.session, uri = vim.uri_from_bufnr(source), range = range }
  client:request('workspace/executeCommand', { command = 'deepseek.chat', arguments = { arg } }, function(err, result)
    local shown = streaming and streaming.references  -- listed before the answer already
    streaming = nil
    if err then return append('\n(error: ' .. (err.message or tostring(err)) .. ')\n') end
    if type(result) ~= 'table' then return append('\n(no answer)\n') end
    M.session = result.sessionId or M.session
    local refs = reference_list(result.references or {})
    if refs ~= '' and not shown then append('\n\nReferences: ' .. refs .. '\n') end
    M.ahead(nil, source)  -- a follow-up (asked without a range) continues this session
    if on_done then on_done(result) end
  end, source)
end

--- The fenced code block under the cursor in the chat buffer: its lines and the question it answers
--- (the `## You:` heading above it), or nil and why not.
function M.block_at_cursor()
  if vim.api.nvim_get_current_buf() ~= M.bufnr then return nil, 'put the cursor on a code block in the chat buffer' end
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  local lines = vim.api.nvim_buf_get_lines(M.bufnr, 0, -1, false)
  local fences = {}
  for i, l in ipairs(lines) do if l:match('^%s*```') then fences[#fences + 1] = i - 1 end end
  if #fences % 2 == 1 then fences[#fences + 1] = #lines end  -- a reply cut short (chat.maxTokens): to the end
  for k = 1, #fences - 1, 2 do
    local open, close = fences[k], fences[k + 1]
    if row >= open and row <= close then
      local heading
      for i = open, 0, -1 do if lines[i + 1]:match('^## ') then heading = i break end end  -- the reply's question
      return { lines = vim.list_slice(lines, open + 2, close), heading = heading }
    end
  end
  return nil, 'no code block under the cursor'
end

local function last_code_window()
  for _, win in ipairs(vim.api.nvim_tabpage_list_wins(0)) do
    if vim.api.nvim_win_get_buf(win) ~= M.bufnr and vim.bo[vim.api.nvim_win_get_buf(win)].buftype == '' then
      return win
    end
  end
end

--- :DeepSeekInsert: the code block under the cursor, inserted below the cursor line of the code window.
function M.insert()
  local block, why = M.block_at_cursor()
  if not block then return vim.notify('deepseek: ' .. why, vim.log.levels.WARN) end
  local win = last_code_window()
  if not win then return vim.notify('deepseek: no window with a file to insert into', vim.log.levels.WARN) end
  local row = vim.api.nvim_win_get_cursor(win)[1]
  vim.api.nvim_buf_set_lines(vim.api.nvim_win_get_buf(win), row, row, false, block.lines)
  vim.api.nvim_set_current_win(win)
  return true
end

--- :DeepSeekCopy: the code block under the cursor into the unnamed register and `+` (when there is a clipboard).
function M.copy()
  local block, why = M.block_at_cursor()
  if not block then return vim.notify('deepseek: ' .. why, vim.log.levels.WARN) end
  vim.fn.setreg('"', block.lines, 'l')
  if vim.fn.has('clipboard') == 1 then pcall(vim.fn.setreg, '+', block.lines, 'l') end
  vim.notify(string.format('deepseek: %d lines copied', #block.lines))
  return true
end

local pending = nil  -- the change :DeepSeekApply previews: { target, lines, preview }

local function base_indent(lines)
  local base
  for _, l in ipairs(lines) do
    if l:match('%S') then
      local ind = l:match('^[ \t]*')
      if not base or #ind < #base then base = ind end
    end
  end
  return base or ''
end

--- `lines` (a chat answer's code, usually at column 0) indented as `old` (the selection) was.
function M.reindent(lines, old)
  local from, to = base_indent(lines), base_indent(old)
  local out = {}
  for i, l in ipairs(lines) do out[i] = l:match('%S') and (to .. l:sub(#from + 1)) or '' end
  return out
end

--- :DeepSeekApply: the code block under the cursor for the selection its question was about (indented as
--- the selection), shown first as a diff in a preview window (`a` applies, `q` discards); refused when
--- that buffer changed since.
function M.apply()
  local block, why = M.block_at_cursor()
  if not block then return vim.notify('deepseek: ' .. why, vim.log.levels.WARN) end
  local target = block.heading and targets[block.heading]
  if not target then
    return vim.notify('deepseek: this answer is not about a selection (ask with a range: :\'<,\'>DeepSeekChat)',
      vim.log.levels.WARN)
  end
  if not vim.api.nvim_buf_is_valid(target.bufnr) or vim.api.nvim_buf_get_changedtick(target.bufnr) ~= target.tick then
    return vim.notify('deepseek: the file changed after the question; nothing applied. Ask again.', vim.log.levels.WARN)
  end
  local s, e = target.range.start.line, target.range['end'].line
  local old = vim.api.nvim_buf_get_lines(target.bufnr, s, e, false)
  local new = M.reindent(block.lines, old)
  local diff = vim.diff(table.concat(old, '\n') .. '\n', table.concat(new, '\n') .. '\n',
    { ctxlen = 3 })
  local name = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(target.bufnr), ':.')
  local preview = vim.api.nvim_create_buf(false, true)
  local header = { string.format('--- %s (lines %d-%d)', name, s + 1, e), string.format('+++ %s (from the chat)', name) }
  vim.api.nvim_buf_set_lines(preview, 0, -1, false, vim.list_extend(header, vim.split(diff, '\n', { trimempty = true })))
  vim.bo[preview].filetype = 'diff'
  vim.bo[preview].modifiable = false
  vim.cmd('botright split')
  vim.api.nvim_win_set_buf(0, preview)
  vim.wo.winbar = 'deepseek: apply?  a = apply   q = discard'
  pending = { target = target, lines = new, preview = preview }
  vim.keymap.set('n', 'a', function() M.confirm_apply() end, { buffer = preview, desc = 'deepseek: apply' })
  vim.keymap.set('n', 'q', function() M.discard() end, { buffer = preview, desc = 'deepseek: discard' })
  return preview
end

local function close_preview()
  if pending and vim.api.nvim_buf_is_valid(pending.preview) then
    vim.api.nvim_buf_delete(pending.preview, { force = true })
  end
end

--- Apply the previewed change (the `a` key of the preview).
function M.confirm_apply()
  if not pending then return false end
  local t, lines = pending.target, pending.lines
  close_preview()
  pending = nil
  if vim.api.nvim_buf_get_changedtick(t.bufnr) ~= t.tick then
    vim.notify('deepseek: the file changed after the question; nothing applied. Ask again.', vim.log.levels.WARN)
    return false
  end
  vim.api.nvim_buf_set_lines(t.bufnr, t.range.start.line, t.range['end'].line, false, lines)
  vim.notify('deepseek: applied')
  return true
end

--- Discard the previewed change (the `q` key of the preview).
function M.discard()
  close_preview()
  pending = nil
end

return M
