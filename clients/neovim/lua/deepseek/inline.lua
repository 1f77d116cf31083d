-- Inline suggestions as virtual text (extmarks): accept all, a word or a line; cycle alternatives; dismiss.
-- Neovim 0.12+ has vim.lsp.inline_completion: then that native feature shows the ghost text instead.
--
-- Keys are buffer-local, set when the deepseek client attaches (LspAttach), and only those the
-- configuration names (`keys`, see :help deepseek-keys); every action is also a <Plug> mapping.
local M = {}
local ns = vim.api.nvim_create_namespace('deepseek.inline')
-- bufnr -> { items = {text...}, index, row, col, request_id, tick }; `tick` is the buffer's changedtick
-- after a partial accept (the edit we made ourselves must not dismiss what is left).
local state = {}
M.answers = 0  -- answers of the server shown so far (tests, statuslines)

M.PLUGS = {
  accept = '<Plug>(deepseek-accept)',
  accept_word = '<Plug>(deepseek-accept-word)',
  accept_line = '<Plug>(deepseek-accept-line)',
  next = '<Plug>(deepseek-next)',
  prev = '<Plug>(deepseek-prev)',
  dismiss = '<Plug>(deepseek-dismiss)',
  suggest = '<Plug>(deepseek-suggest)',
}

local function buf(bufnr)
  if bufnr == nil or bufnr == 0 then return vim.api.nvim_get_current_buf() end
  return bufnr
end

local function clear(bufnr)
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  state[bufnr] = nil
end

local function draw(bufnr, row, col, text)
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  if text == nil or text == '' then return end
  local lines = vim.split(text, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do virt_lines[#virt_lines + 1] = { { lines[i], 'Comment' } } end
  vim.api.nvim_buf_set_extmark(bufnr, ns, row, col, {
    virt_text = { { lines[1], 'Comment' } }, virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil, hl_mode = 'combine',
  })
end

--- Show suggestions at (row, col): `items` is a list of texts (or one text); the first is shown.
function M.show(bufnr, row, col, items, index)
  bufnr = buf(bufnr)
  if type(items) == 'string' then items = { items } end
  local kept = {}
  for _, t in ipairs(items or {}) do if t ~= '' then kept[#kept + 1] = t end end
  if #kept == 0 then return clear(bufnr) end
  local old = state[bufnr] or {}
  state[bufnr] = { items = kept, index = math.min(index or 1, #kept), row = row, col = col,
                   request_id = old.request_id, tick = old.tick }
  draw(bufnr, row, col, kept[state[bufnr].index])
end

--- The suggestion currently shown in a buffer (for tests and statuslines), or nil.
function M.current(bufnr)
  local s = state[buf(bufnr)]
  return s and s.items and s.items[s.index] or nil
end

--- How many suggestions the buffer holds and which is shown: (index, count), or (0, 0).
function M.position(bufnr)
  local s = state[buf(bufnr)]
  if not s or not s.items then return 0, 0 end
  return s.index, #s.items
end

--- Ask the server for a suggestion at the cursor. `manual` = the user asked (Invoked: alternatives too).
--- `on_done(items)` runs after the answer was shown (tests, cycling).
function M.request(manual, on_done)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = require('deepseek').client(bufnr)
  if not client then return end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  row = row - 1
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = manual and 1 or 2 }
  local previous = state[bufnr]
  if previous and previous.request_id then client:cancel_request(previous.request_id) end
  local ok, id = client:request('textDocument/inlineCompletion', params, function(err, result)
    if err or not result then return end
    local cursor = vim.api.nvim_win_get_cursor(0)
    if vim.api.nvim_get_current_buf() ~= bufnr or cursor[1] - 1 ~= row or cursor[2] ~= col then return end
    local texts = {}
    for _, item in ipairs(result.items or result) do
      local t = type(item.insertText) == 'table' and item.insertText.value or item.insertText
      if type(t) == 'string' then texts[#texts + 1] = t end
    end
    M.show(bufnr, row, col, texts)
    M.answers = M.answers + 1
    if on_done then on_done(texts) end
  end, bufnr)
  if ok then state[bufnr] = vim.tbl_extend('force', state[bufnr] or {}, { request_id = id }) end
end

--- Insert `part` of the shown suggestion at its position; what is left stays shown. True when there was one.
local function insert(bufnr, s, part, rest)
  local lines = vim.split(part, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, s.col, lines)
  local row = s.row + #lines - 1
  local col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  if rest == '' then return clear(bufnr) end
  M.show(bufnr, row, col, { rest })
  state[bufnr].tick = vim.api.nvim_buf_get_changedtick(bufnr)
  -- As VS Code does after a partial accept: ask again; the server answers the rest from its cache.
  M.request(false)
end

--- The next word of `text` as VS Code's acceptNextWord takes it: a run of whitespace (newlines
--- included), else a word, else a run of punctuation.
function M.next_word(text)
  return text:match('^%s+') or text:match('^[%w_]+') or text:match('^[^%w_%s]+') or text
end

--- The next line of `text` (through its newline), as VS Code's acceptNextLine takes it.
function M.next_line(text)
  local nl = text:find('\n', 1, true)
  return nl and text:sub(1, nl) or text
end

--- Accept the whole suggestion, its next word (`how` = 'word') or its next line ('line'). True when there was one.
function M.accept(how)
  local bufnr = vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  local text = s and s.items and s.items[s.index]
  if not text then return false end
  local part = how == 'word' and M.next_word(text) or how == 'line' and M.next_line(text) or text
  if part == text then
    clear(bufnr)
    insert(bufnr, s, text, '')
  else
    insert(bufnr, s, part, text:sub(#part + 1))
  end
  return true
end

--- Show the next (`step` 1) or previous (-1) suggestion; the first time, ask for the alternatives.
function M.cycle(step)
  local bufnr = vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  if s and s.items and #s.items > 1 then
    s.index = (s.index - 1 + step) % #s.items + 1
    draw(bufnr, s.row, s.col, s.items[s.index])
    return
  end
  local shown = M.current(bufnr)
  M.request(true, function()
    local now = state[bufnr]
    if not now or #now.items < 2 then return end
    local at = 1  -- the one shown before, in the new list (ranked by likelihood, it need not be first)
    for i, t in ipairs(now.items) do if t == shown then at = i end end
    now.index = (at - 1 + step) % #now.items + 1
    draw(bufnr, now.row, now.col, now.items[now.index])
  end)
end

function M.dismiss() clear(vim.api.nvim_get_current_buf()) end

-- An action for a key: when there is no suggestion, the key does what it did before (another
-- plugin's mapping of it, Neovim's own, or the key itself). Keys are fed at the start of the
-- typeahead ('i') so that what was typed after the key still comes after it.
local function with_fallback(lhs, action)
  local before = vim.fn.maparg(lhs, 'i', false, true)
  return function()
    if action() then return end
    local remap = before.noremap == 1 and 'ni' or 'mi'
    if before.callback then
      local keys = before.callback()
      if before.expr == 1 and type(keys) == 'string' then
        vim.api.nvim_feedkeys(before.replace_keycodes == 1 and vim.keycode(keys) or keys, remap, false)
      end
    elseif before.rhs and before.rhs ~= '' then
      vim.api.nvim_feedkeys(vim.keycode(before.rhs), remap, false)
    else
      vim.api.nvim_feedkeys(vim.keycode(lhs), 'ni', false)
    end
  end
end

--- Set the configured keys in `bufnr` (buffer-local); `keys = false` (or a key set to false) sets none.
function M.map_keys(bufnr, keys)
  if not keys then return end
  local acts = {
    accept = function() return M.accept() end,
    accept_word = function() return M.accept('word') end,
    accept_line = function() return M.accept('line') end,
    dismiss = function() if M.current(bufnr) then M.dismiss() return true end return false end,
  }
  for name, lhs in pairs(keys) do
    if lhs and M.PLUGS[name] then
      if acts[name] then
        vim.keymap.set('i', lhs, with_fallback(lhs, acts[name]), { buffer = bufnr, desc = 'deepseek: ' .. name })
      else
        vim.keymap.set('i', lhs, M.PLUGS[name], { buffer = bufnr, remap = true, desc = 'deepseek: ' .. name })
      end
    end
  end
end

function M.attach(cfg)
  for _, mode in ipairs({ 'i', 'n' }) do
    vim.keymap.set(mode, M.PLUGS.accept, function() M.accept() end, { desc = 'deepseek: accept the suggestion' })
    vim.keymap.set(mode, M.PLUGS.accept_word, function() M.accept('word') end, { desc = 'deepseek: accept a word' })
    vim.keymap.set(mode, M.PLUGS.accept_line, function() M.accept('line') end, { desc = 'deepseek: accept a line' })
    vim.keymap.set(mode, M.PLUGS.next, function() M.cycle(1) end, { desc = 'deepseek: next suggestion' })
    vim.keymap.set(mode, M.PLUGS.prev, function() M.cycle(-1) end, { desc = 'deepseek: previous suggestion' })
    vim.keymap.set(mode, M.PLUGS.dismiss, function() M.dismiss() end, { desc = 'deepseek: dismiss the suggestion' })
    vim.keymap.set(mode, M.PLUGS.suggest, function() M.request(true) end, { desc = 'deepseek: suggest here' })
  end
  local group = vim.api.nvim_create_augroup('deepseek.inline', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', { group = group, callback = function(ev)
    local client = vim.lsp.get_client_by_id(ev.data.client_id)
    if client and client.name == 'deepseek' then M.map_keys(ev.buf, cfg.keys) end
  end })
  -- Work ahead: where the cursor comes to rest (a jump, a search, entering Insert mode) ask for code
  -- actions there, as VS Code does at every move; the server reads the prompt there into its KV
  -- cache, so the first suggestion pays only for what is then typed. The answer is not used.
  local ahead = vim.uv.new_timer()
  vim.api.nvim_create_autocmd({ 'CursorMoved', 'InsertEnter' }, { group = group, callback = function(ev)
    if not require('deepseek').client(ev.buf) then return end
    ahead:stop()
    ahead:start(ev.event == 'InsertEnter' and 0 or 150, 0, vim.schedule_wrap(function()
      local client = require('deepseek').client(ev.buf)
      if not client or vim.api.nvim_get_current_buf() ~= ev.buf then return end
      local params = vim.lsp.util.make_range_params(0, client.offset_encoding)
      params.range['end'] = params.range.start
      params.context = { diagnostics = {} }
      client:request('textDocument/codeAction', params, function() end, ev.buf)
    end))
  end })
  if vim.lsp.inline_completion then  -- Neovim 0.12+: the native ghost text
    vim.lsp.inline_completion.enable(true)
    return
  end
  local timer = vim.uv.new_timer()
  if cfg.auto then
    vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, { group = group, callback = function(ev)
      local s = state[ev.buf]
      if s and s.tick == vim.api.nvim_buf_get_changedtick(ev.buf) then return end  -- our own partial accept
      if not require('deepseek').client(ev.buf) then return end
      M.dismiss()
      timer:stop()
      timer:start(30, 0, vim.schedule_wrap(function() M.request(false) end))  -- the server debounces too
    end })
  end
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, { group = group, callback = function() M.dismiss() end })
end

return M
