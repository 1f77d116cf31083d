-- Inline suggestions as virtual text (extmarks), with accept and dismiss keys.
-- Neovim 0.12+ has vim.lsp.inline_completion: then that native feature is used instead.
local M = {}
local ns = vim.api.nvim_create_namespace('deepseek.inline')
local state = {}  -- bufnr -> { text, row, col, request_id }

local function clear(bufnr)
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  state[bufnr] = nil
end

--- Show `text` at (row, col) as ghost text: the first line after the cursor, the rest below.
function M.show(bufnr, row, col, text)
  clear(bufnr)
  if text == nil or text == '' then return end
  local lines = vim.split(text, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do virt_lines[#virt_lines + 1] = { { lines[i], 'Comment' } } end
  vim.api.nvim_buf_set_extmark(bufnr, ns, row, col, {
    virt_text = { { lines[1], 'Comment' } }, virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil, hl_mode = 'combine',
  })
  state[bufnr] = { text = text, row = row, col = col }
end

--- The suggestion currently shown in a buffer (for tests and statuslines), or nil.
function M.current(bufnr)
  if bufnr == nil or bufnr == 0 then bufnr = vim.api.nvim_get_current_buf() end
  local s = state[bufnr]
  return s and s.text or nil
end

--- Ask the server for a suggestion at the cursor. `manual` = the user asked (Invoked).
function M.request(manual)
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
    local items = result.items or result
    local cursor = vim.api.nvim_win_get_cursor(0)
    if vim.api.nvim_get_current_buf() ~= bufnr or cursor[1] - 1 ~= row or cursor[2] ~= col then return end
    M.show(bufnr, row, col, items[1] and items[1].insertText or '')
  end, bufnr)
  if ok then state[bufnr] = vim.tbl_extend('force', state[bufnr] or {}, { request_id = id }) end
end

--- Insert the suggestion shown at the cursor. Returns true when there was one.
function M.accept()
  local bufnr = vim.api.nvim_get_current_buf()
  local s = state[bufnr]
  if not s or not s.text then return false end
  clear(bufnr)
  local lines = vim.split(s.text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, s.col, lines)
  local last = s.row + #lines - 1
  local col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { last + 1, col })
  return true
end

function M.dismiss() clear(vim.api.nvim_get_current_buf()) end

function M.attach(cfg)
  if vim.lsp.inline_completion then  -- Neovim 0.12+: the native ghost text
    vim.lsp.inline_completion.enable(true)
    return
  end
  local group = vim.api.nvim_create_augroup('deepseek.inline', { clear = true })
  local timer = vim.uv.new_timer()
  if cfg.auto then
    vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, { group = group, callback = function()
      M.dismiss()
      timer:stop()
      timer:start(30, 0, vim.schedule_wrap(function() M.request(false) end))  -- the server debounces too
    end })
  end
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, { group = group, callback = function() M.dismiss() end })
  vim.keymap.set('i', cfg.keys.accept, function()
    if not M.accept() then vim.api.nvim_feedkeys(vim.keycode(cfg.keys.accept), 'n', false) end
  end, { desc = 'deepseek: accept the suggestion' })
  vim.keymap.set('i', cfg.keys.dismiss, M.dismiss, { desc = 'deepseek: dismiss the suggestion' })
end

return M
