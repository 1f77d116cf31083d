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

-- Trust is explicit: a project nobody trusted runs no code; :DeepSeekTrust tells the running server.
local function trusted()
  return client:request_sync('workspace/executeCommand', { command = 'deepseek.status' }, 5000, 0).result.workspaceTrusted
end
if trusted() ~= false then fail('a project nobody trusted counts as trusted') end
vim.cmd('DeepSeekTrust')
if not vim.wait(5000, trusted, 100) then fail(':DeepSeekTrust did not reach the server') end
if not require('deepseek.trust').is_trusted(client.root_dir or vim.fn.getcwd()) then fail('the trust list does not hold the root') end
vim.cmd('DeepSeekTrust!')
if not vim.wait(5000, function() return trusted() == false end, 100) then fail(':DeepSeekTrust! did not reach the server') end
print('trust: untrusted at start, trusted after :DeepSeekTrust, untrusted after :DeepSeekTrust!')

-- The agent (:DeepSeekAgent): its steps (deepseek/agentStep, through the plugin's handler) stream into the
-- chat buffer; in this untrusted project the server refuses the run, and the buffer says why.
local agent = require('deepseek.agent')
local chat = require('deepseek.chat')
if vim.fn.exists(':DeepSeekAgent') ~= 2 or vim.fn.exists(':DeepSeekAgentStop') ~= 2 then fail('no :DeepSeekAgent') end
if type(client.commands['deepseek.agent']) ~= 'function' then fail('the Fix code action\'s deepseek.agent is not the plugin\'s') end
local function chat_text() return table.concat(vim.api.nvim_buf_get_lines(chat.bufnr, 0, -1, false), '\n') end
local on_step = client.handlers['deepseek/agentStep']
local function fake_step(run_id, index, ok)
  on_step(nil, { runId = run_id, step = { index = index, thought = 'Run the failing test first.', tool = 'run_tests',
    arguments = { selector = 'tests/test_unix.py' }, observation = 'FAILED tests/test_unix.py::test_music\nassert None == "~/Music"\n1 failed',
    ok = ok, seconds = 1.44, tokens = 30 } }, { method = 'deepseek/agentStep', client_id = client.id })
end
vim.cmd('DeepSeekAgent make user_music_dir return the music folder')
fake_step('run-1', 1, false)  -- before the server's answer: the run's first step
fake_step('run-1', 1, false)  -- the same step again
fake_step('run-2', 2, true)   -- another run's
if not vim.wait(30000, function() return chat_text():find('(error: this workspace is not trusted', 1, true) ~= nil end, 50) then
  fail('the untrusted run was not refused in the chat buffer:\n' .. chat_text())
end
fake_step('run-1', 2, true)   -- after the end: no run is shown
vim.wait(100, function() return false end)
local shown = chat_text()
local _, n_steps = shown:gsub('%[step %d%]', '')
if not shown:find('## Agent: make user_music_dir return the music folder\n\n[step 1] run_tests FAILED (1.4 s)\n'
    .. '    Thought: Run the failing test first.\n    Call: run_tests {"selector":"tests/test_unix.py"}\n'
    .. '    | FAILED tests/test_unix.py::test_music\n', 1, true) or n_steps ~= 1 then
  fail('the step is not shown once, in its place:\n' .. shown)
end
local folded = vim.api.nvim_win_call(vim.fn.bufwinid(chat.bufnr), function()
  return vim.fn.foldclosed(vim.fn.search('^    | FAILED tests/test_unix', 'nw'))
end)
if folded == -1 then fail('the step\'s observation is not folded') end
-- :DeepSeekAgentStop cancels the request: the buffer says so and the server's late answer is not shown.
vim.cmd('DeepSeekAgent stop me')
vim.cmd('DeepSeekAgentStop')
vim.wait(1000, function() return false end)
if not vim.endswith(chat_text(), '## Agent: stop me\n\nStopped.\n') then fail(':DeepSeekAgentStop: ' .. chat_text()) end
-- The code action deepseek: Fix on a problem the editor shows: the plugin runs it in the chat buffer.
local diag = { range = { start = { line = 2, character = 0 }, ['end'] = { line = 2, character = 4 } }, message = 'F821 undefined name',
  source = 'ruff', severity = 1 }
local actions = client:request_sync('textDocument/codeAction', { textDocument = { uri = vim.uri_from_bufnr(0) },
  range = diag.range, context = { diagnostics = { diag }, triggerKind = 1 } }, 10000, 0).result or {}
local fix
for _, a in ipairs(actions) do if a.title == 'deepseek: Fix' then fix = a end end
if not fix then fail('no deepseek: Fix action: ' .. vim.inspect(actions)) end
client:exec_cmd(fix.command, { bufnr = 0 })
if not vim.wait(30000, function()
  return chat_text():find('## Agent: Fix this problem reported by ruff at line 3: F821 undefined name\n\n(error: this workspace', 1, true) ~= nil
end, 50) then fail('deepseek: Fix did not run in the chat buffer:\n' .. chat_text()) end
-- A verified run's end: the answer, the edit as a diff, the check; the fix is applied only after a yes.
local ended = table.concat(agent.result_lines({ runId = 'r', outcome = 'finished', answer = 'The return was missing.',
  steps = { {}, {}, {} }, edits = { { uri = vim.uri_from_bufnr(0), old = 'def f():\n    pass\n', new = 'def f():\n    return 1\n' } },
  check = { verdict = 'passed', summary = '2 tests pass with the edit', tests = { 'a', 'b' }, failed = {} }, verified = true,
  seconds = 41.4, malformed = 0 }), '\n')
if not ended:find('Finished after 3 steps (41 s).\n\nThe return was missing.\n', 1, true)
  or not ended:find('```diff\n', 1, true) or not ended:find('\n-    pass\n+    return 1\n```', 1, true)
  or not ended:find('Check: passed, 2 tests pass with the edit', 1, true) or ended:find('not applicable', 1, true) then
  fail('the end of a verified run: ' .. ended)
end
local asked, answer
local ui_input = vim.ui.input
vim.ui.input = function(opts, on_confirm) asked = opts.prompt; on_confirm('y') end
agent.offer_apply(client, 'no-such-run', 0, function(r) answer = r end)
vim.ui.input = ui_input
if not vim.wait(10000, function() return answer ~= nil end, 50) then fail('deepseek.agentApply gave no answer') end
if asked ~= 'deepseek: Apply the fix? [y/N] ' or answer.applied ~= false
  or not chat_text():find('Not applied: deepseek.agentApply needs the {runId}', 1, true) then
  fail('apply: asked ' .. tostring(asked) .. ', answer ' .. vim.inspect(answer) .. '\n' .. chat_text())
end
print('agent: steps streamed into the chat buffer (observation folded), refused in an untrusted project, stopped, deepseek: Fix runs there, apply asks first')

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

-- Keys: buffer-local in the attached buffer only, no global <Tab>; the <Plug> mappings exist.
local function buffer_map(lhs) return vim.fn.maparg(lhs, 'i', false, true).buffer == 1 end
if not buffer_map('<Tab>') or not buffer_map('<M-Right>') or not buffer_map('<M-]>') then fail('keys not buffer-local') end
local scratch = vim.api.nvim_create_buf(true, false)
vim.api.nvim_buf_call(scratch, function()  -- Neovim's own <Tab> (snippet jump) stays there
  local m = vim.fn.maparg('<Tab>', 'i', false, true)
  if m.buffer == 1 or (m.desc or ''):find('deepseek', 1, true) then fail('<Tab> is deepseek\'s in another buffer') end
end)
-- With no suggestion shown, <Tab> does what it did before (Neovim's default: indent when no snippet is active).
local last = vim.api.nvim_buf_line_count(0)
vim.api.nvim_win_set_cursor(0, { last, 0 })
vim.api.nvim_feedkeys(vim.keycode('o<Tab>x<Esc>'), 'xt', false)
local typed = vim.api.nvim_buf_get_lines(0, last, last + 1, false)[1]
if not (typed or ''):match('^%s+x$') then fail(('<Tab> without a suggestion typed %q'):format(tostring(typed))) end
vim.api.nvim_buf_set_lines(0, last, last + 1, false, {})
for _, plug in ipairs({ 'accept', 'accept-word', 'accept-line', 'next', 'prev', 'dismiss', 'suggest' }) do
  if vim.fn.maparg('<Plug>(deepseek-' .. plug .. ')', 'i') == '' then fail('no <Plug>(deepseek-' .. plug .. ')') end
end
print('keys: buffer-local')

local function status()
  return client:request_sync('workspace/executeCommand', { command = 'deepseek.status' }, 5000, 0).result.completion
end
local function screenshot(name)  -- the screen as text, as a user would see it (docs/images)
  local out = {}
  for row = 1, vim.o.lines do
    local chars = {}
    for col = 1, vim.o.columns do chars[#chars + 1] = vim.fn.screenstring(row, col) end
    out[#out + 1] = (table.concat(chars):gsub('%s+$', ''))
  end
  local dir = os.getenv('SCREENS')
  if dir then
    local f = io.open(dir .. '/' .. name .. '.txt', 'w')
    f:write(table.concat(out, '\n') .. '\n')
    f:close()
  end
  return table.concat(out, '\n')
end

-- Alternatives (<Plug>(deepseek-next)) and partial accepts in the body of a method cut out of the file.
local def = vim.fn.search('def user_videos_dir', 'w')
vim.api.nvim_buf_set_lines(0, def, def + 2, false, {})  -- the docstring and the return line
local eol = #vim.api.nvim_buf_get_lines(0, def - 1, def, false)[1]
vim.api.nvim_win_set_cursor(0, { def, eol })
inline.cycle(1)  -- nothing shown yet: an explicit request, then the second suggestion
if not vim.wait(300000, function() local _, n = inline.position(0); return n > 0 end, 100) then fail('no alternatives') end
local index, count = inline.position(0)
if count < 2 or index ~= 2 then fail(('expected the 2nd of several suggestions, got %d of %d'):format(index, count)) end
local second = inline.current(0)
inline.cycle(-1)
local first = inline.current(0)
if first == second then fail('the alternatives are the same') end
vim.cmd('redraw')
screenshot('neovim-alternatives')
print(('alternatives: %d; first %q, second %q'):format(count, first, second))

local before = status()
vim.api.nvim_win_set_cursor(0, { def, eol })
local function accept_part(how)  -- accept a part; the plugin asks the server again, as VS Code does
  local answers = inline.answers
  local text = inline.current(0)
  inline.accept(how)
  local rest = inline.current(0)
  local part = how == 'word' and inline.next_word(text) or inline.next_line(text)
  if rest ~= text:sub(#part + 1) then fail(('after a %s the rest is not shown: %q'):format(how, tostring(rest))) end
  if not vim.wait(60000, function() return inline.answers > answers end, 20) then fail('the server did not answer') end
  if inline.current(0) ~= rest then fail(('the server answered %q, not the rest %q'):format(inline.current(0), rest)) end
  return rest
end
accept_part('word')                -- the line break and the indentation
local rest2 = accept_part('word')  -- the first word of the body
vim.cmd('redraw')
screenshot('neovim-partial-accept')
local after = status()
if after.modelAnswers ~= before.modelAnswers or after.cacheAnswers < before.cacheAnswers + 2 then
  fail(('the rest was not served from the cache: %s -> %s'):format(vim.inspect(before), vim.inspect(after)))
end
print(('partial accepts: rest %q from the cache (model answers %d, cache answers %d -> %d)'):format(
  rest2, after.modelAnswers, before.cacheAnswers, after.cacheAnswers))
inline.accept('line')
local accepted_body = vim.api.nvim_buf_get_lines(0, def, def + 1, false)[1]
if accepted_body ~= vim.split(first, '\n')[2] then fail('accepting the line wrote: ' .. accepted_body) end
print('accepted: ' .. accepted_body)

-- Work ahead: the cursor comes to rest at another method in Normal mode; the plugin asks for code
-- actions there and the server reads the prompt there into its KV cache.
local answers_after_accept = inline.answers
vim.cmd('stopinsert')
-- The request after the accept comes and is answered (seconds on a slow CPU), then the user moves.
vim.wait(60000, function() return inline.answers > answers_after_accept end, 50)
vim.wait(500, function() return false end)
local ahead_before = status().readAhead
vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('gg', true, false, true), 'x', false)
vim.fn.search('def user_log_dir', 'w')
vim.api.nvim_exec_autocmds('CursorMoved', { buffer = 0, modeline = false })
if not vim.wait(180000, function() return status().readAhead > ahead_before end, 200) then
  fail(('no read-ahead where the cursor came to rest (readAhead %d)'):format(ahead_before))
end
print(('read ahead at a new place: readAhead %d -> %d'):format(ahead_before, status().readAhead))

-- Reading ahead for the assistant: the deepseek/assistAhead notifications the plugin sends, recorded
-- on their way to the server.
local sent = {}
local notify = client.notify
client.notify = function(self, method, params)
  if method == 'deepseek/assistAhead' then sent[#sent + 1] = params end
  return notify(self, method, params)
end
local function last_sent(task)  -- the latest signal of `task` (a CursorHold of Neovim's own may add a hover)
  for i = #sent, 1, -1 do if sent[i].task == task then return sent[i] end end
end
local function expect_sent(task, want, what)
  if not vim.deep_equal(last_sent(task), want) then
    fail(what .. ': expected ' .. vim.inspect(want) .. ', sent ' .. vim.inspect(sent))
  end
  sent = {}
end
local function assist_reads()
  return client:request_sync('workspace/executeCommand', { command = 'deepseek.status' }, 5000, 0).result.chat.readAhead.reads
end

-- A chat reply streams into the chat buffer.
local chat = require('deepseek.chat')
chat.send('In one sentence: what does user_music_dir return?')
if not vim.wait(180000, function() return chat.session ~= nil end, 100) then fail('no chat reply') end
local reads = assist_reads()
vim.wait(500, function() return false end)  -- let the last streamed pieces land
local lines = vim.api.nvim_buf_get_lines(chat.bufnr, 0, -1, false)
local body = table.concat(lines, '\n')
local reply = body:match('## You: [^\n]*\n\n(.+)')
if not reply or #vim.trim(reply) < 10 then fail('the chat buffer holds no reply: ' .. body) end
if not reply:match('^Using: [^\n]*unix_hole%.py:%d') then fail('the references did not come before the answer: ' .. reply) end
print('chat: ' .. vim.trim(reply):gsub('\n', ' '):sub(1, 120))

-- After the answer: the follow-up's prompt (this file, the conversation so far) is read while it is typed.
local uri = vim.uri_from_bufnr(0)
expect_sent('chat', { task = 'chat', uri = uri, sessionId = chat.session }, 'after an answer')
if not vim.wait(120000, function() return assist_reads() > reads end, 200) then fail('the server read nothing ahead') end
-- :DeepSeekChat without a message: the split is open and the signal carries the range while the message is typed.
local input, prompted = vim.ui.input, nil
vim.ui.input = function(opts, on_confirm) prompted = opts.prompt; on_confirm(nil) end
vim.cmd('2,4DeepSeekChat')
vim.ui.input = input
if prompted ~= 'deepseek> ' then fail(':DeepSeekChat did not ask for a message') end
expect_sent('chat', { task = 'chat', uri = uri, sessionId = chat.session,
  range = { start = { line = 1, character = 0 }, ['end'] = { line = 4, character = 0 } } }, ':DeepSeekChat')
chat.ahead(nil, nil, '  where is the music ')  -- what a pause in typing the message sends
expect_sent('chat', { task = 'chat', uri = uri, sessionId = chat.session, draft = 'where is the music' }, 'a draft')
-- The cursor rests (CursorHold) on a name: hover; on a blank: nothing.
local music = vim.fn.search('def user_music_dir', 'w')
local name_col = vim.api.nvim_buf_get_lines(0, music - 1, music, false)[1]:find('user_music_dir', 1, true) + 2
vim.api.nvim_win_set_cursor(0, { music, name_col })
vim.api.nvim_exec_autocmds('CursorHold', { buffer = 0, modeline = false })
expect_sent('hover', { task = 'hover', uri = uri, position = { line = music - 1, character = name_col } }, 'CursorHold on a name')
vim.api.nvim_win_set_cursor(0, { music, 0 })  -- the indentation before `def`
vim.api.nvim_exec_autocmds('CursorHold', { buffer = 0, modeline = false })
if #sent > 0 then fail('CursorHold on a blank sent ' .. vim.inspect(sent)) end
-- Off: the setup option read_ahead = false, or the server setting chat.readAhead = false.
vim.api.nvim_win_set_cursor(0, { music, name_col })
ds.config.read_ahead = false
vim.api.nvim_exec_autocmds('CursorHold', { buffer = 0, modeline = false })
ds.config.read_ahead = true
ds.set_settings({ chat = { readAhead = false } })
vim.api.nvim_exec_autocmds('CursorHold', { buffer = 0, modeline = false })
chat.ahead(nil)
ds.set_settings({ chat = { readAhead = true } })
if #sent > 0 then fail('read ahead while it was off: ' .. vim.inspect(sent)) end
print(('read ahead for the assistant: chat after an answer and at :DeepSeekChat, hover on CursorHold; reads %d -> %d')
  :format(reads, assist_reads()))

-- A question about a selection; its code block: :DeepSeekApply previews the diff, `a` applies it.
local code_win = vim.api.nvim_get_current_win()
local range = { start = { line = def - 2, character = 0 }, ['end'] = { line = def + 1, character = 0 } }
local answered = nil
ds.set_settings({ chat = { maxTokens = 400 } })  -- room for a whole method
chat.send('Complete this method: it must return the videos directory. Answer with the whole method in one python code block.',
  range, function(result) answered = result end)
if not vim.wait(600000, function() return answered ~= nil end, 100) then fail('no answer about the selection') end
vim.wait(300, function() return false end)
local chat_win = vim.fn.bufwinid(chat.bufnr)
vim.api.nvim_set_current_win(chat_win)
local chat_lines = vim.api.nvim_buf_get_lines(chat.bufnr, 0, -1, false)
local last_open, inside = nil, false
for i, l in ipairs(chat_lines) do
  if l:match('^%s*```') then
    inside = not inside
    if inside then last_open = i end
  end
end
if not last_open then fail('the answer has no code block:\n' .. table.concat(chat_lines, '\n')) end
vim.api.nvim_win_set_cursor(chat_win, { last_open + 1, 0 })
local block = chat.block_at_cursor()
if not block or not table.concat(block.lines, '\n'):find('def user_videos_dir', 1, true) then
  fail('the code block under the cursor is not the method: ' .. vim.inspect(block) .. '\n' .. table.concat(chat_lines, '\n'))
end
vim.cmd('DeepSeekCopy')
if vim.fn.getreg('"') ~= table.concat(block.lines, '\n') .. '\n' then fail('DeepSeekCopy: ' .. vim.fn.getreg('"')) end
vim.cmd('DeepSeekApply')
local preview = vim.api.nvim_get_current_buf()
local diff = table.concat(vim.api.nvim_buf_get_lines(preview, 0, -1, false), '\n')
if vim.bo[preview].filetype ~= 'diff' or not diff:find('\n@@ ') or not diff:find('^%-%-%- ') then fail('no diff preview: ' .. diff) end
vim.cmd('redraw')
screenshot('neovim-chat-apply')
vim.api.nvim_feedkeys('a', 'x', false)  -- the preview's key: apply
local source = vim.api.nvim_win_get_buf(code_win)
local applied = vim.api.nvim_buf_get_lines(source, def - 2, def - 2 + #block.lines, false)
local want = chat.reindent(block.lines, { '    @property' })  -- indented as the method it replaces
if table.concat(applied, '\n') ~= table.concat(want, '\n') then fail('not applied: ' .. table.concat(applied, '\n')) end
for _, l in ipairs(applied) do
  if l:match('%S') and not l:match('^    ') then fail('not indented as the selection: ' .. l) end
end
print(('apply: %d lines of the answer replaced lines %d-%d after a diff preview'):format(#block.lines, def - 1, def + 1))
vim.api.nvim_set_current_win(chat_win)
vim.api.nvim_win_set_cursor(chat_win, { last_open + 1, 0 })
vim.api.nvim_win_set_cursor(code_win, { 1, 0 })
vim.cmd('DeepSeekInsert')
if vim.api.nvim_buf_get_lines(source, 1, 2, false)[1] ~= block.lines[1] then fail('DeepSeekInsert did not insert the block') end
print('insert and copy: ok')
-- Deltas of another session are not shown; a nil result does not raise.
local n_before = vim.api.nvim_buf_line_count(chat.bufnr)
chat.begin(chat.session)
chat.on_delta({ sessionId = 'another-session', delta = 'NOT MINE' })
chat.on_delta(nil)
chat.begin(false)
vim.wait(200, function() return false end)
if table.concat(vim.api.nvim_buf_get_lines(chat.bufnr, 0, -1, false), '\n'):find('NOT MINE', 1, true) then
  fail('a delta of another session was shown')
end
if vim.api.nvim_buf_line_count(chat.bufnr) ~= n_before then fail('the chat buffer changed') end
print('sessions filtered: ok')
-- A setting changed while the server runs: the same server answers with it (completion.maxTokens 3).
vim.api.nvim_set_current_win(code_win)
ds.set_settings({ completion = { maxTokens = 3 } })
local docs = vim.fn.search('XDG_DOCUMENTS_DIR', 'w')
local docs_line = vim.api.nvim_buf_get_lines(0, docs - 1, docs, false)[1]
local cut = docs_line:find('return ', 1, true) + #'return ' - 1
vim.api.nvim_buf_set_lines(0, docs - 1, docs, false, { docs_line:sub(1, cut) })
vim.api.nvim_win_set_cursor(0, { docs, cut })
inline.dismiss()
inline.request(true)
if not vim.wait(120000, function() return inline.current(0) ~= nil end, 50) then fail('no suggestion after the change') end
local short = inline.current(0)
if #short >= 16 or short:find('\n') or ds.client(0).id ~= client.id then
  fail(('not a 3-token suggestion from the same client: %q'):format(short))
end
print(('live settings: %q from the same server (client %d)'):format(short, client.id))

-- :checkhealth deepseek reports the server, the model and the memory.
vim.cmd('checkhealth deepseek')
local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
for _, want in ipairs({ 'server found', 'model qwen2.5-coder-0.5b-instruct-q4_k_m (qwen2.5-coder) loaded', 'RAM:' }) do
  if not report:find(want, 1, true) then fail('checkhealth lacks "' .. want .. '":\n' .. report) end
end
print('health: ok')
vim.lsp.stop_client(client.id)
os.exit(0)
