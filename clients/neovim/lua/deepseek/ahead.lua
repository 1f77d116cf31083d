-- Reading ahead (docs/PROTOCOL.md, "Reading ahead"): the plugin tells the server what the user is
-- about to ask the assistant, with the notification deepseek/assistAhead, and the server reads
-- that request's prompt into the chat model's KV cache meanwhile, so the answer starts sooner.
--
--   chat   when :DeepSeekChat asks for a message (the chat split opens first), when typing the message
--          pauses (500 ms; the message so far as `draft`) and after each answer (chat or Explain):
--          {task, uri, range?, sessionId?, draft?}
--   hover  on |CursorHold| in a buffer the server is attached to, with the cursor on a word:
--          {task, uri, position}
--
-- One signal at a time (the server keeps only the latest). Explain needs none: the server reads its
-- prompt when the plugin asks for code actions where the cursor comes to rest (inline.lua).
-- Off with the setup option `read_ahead = false` or the server setting `chat.readAhead = false`.
local M = {}

M.METHOD = 'deepseek/assistAhead'

--- Whether the plugin reads ahead: the `read_ahead` option and the server setting `chat.readAhead`
--- (nested `{ chat = { readAhead = false } }` or dotted `['chat.readAhead'] = false`).
function M.enabled()
  local cfg = require('deepseek').config
  if cfg.read_ahead == false then return false end
  local settings = cfg.settings or {}
  if settings['chat.readAhead'] == false then return false end
  return not (type(settings.chat) == 'table' and settings.chat.readAhead == false)
end

--- Send deepseek/assistAhead `params` to the deepseek client of `bufnr`. True when it was sent.
function M.send(bufnr, params)
  if not M.enabled() then return false end
  local client = require('deepseek').client(bufnr)
  if not client then return false end
  return client:notify(M.METHOD, params) ~= false
end

--- The chat's signal: the next question goes with `bufnr` (about `range`, an LSP range, or nil for
--- none), continues `session` (nil: a new one) and starts as `draft` (the message typed so far; nil
--- or blank: none). True when it was sent.
function M.chat(bufnr, range, session, draft)
  if not bufnr or not vim.api.nvim_buf_is_valid(bufnr) then return false end
  draft = type(draft) == 'string' and vim.trim(draft) or ''
  return M.send(bufnr, { task = 'chat', uri = vim.uri_from_bufnr(bufnr), range = range, sessionId = session,
                         draft = draft ~= '' and draft or nil })
end

--- The hover signal for the cursor of the current window, when it is on a word (a character of
--- 'iskeyword' is under it). True when it was sent.
function M.hover()
  local bufnr = vim.api.nvim_get_current_buf()
  local client = require('deepseek').client(bufnr)
  if not client then return false end
  local col = vim.api.nvim_win_get_cursor(0)[2]
  local char = vim.fn.strcharpart(vim.api.nvim_get_current_line():sub(col + 1), 0, 1)
  if char == '' or vim.fn.match(char, [[^\k$]]) ~= 0 then return false end
  local position = vim.lsp.util.make_position_params(0, client.offset_encoding).position
  return M.send(bufnr, { task = 'hover', uri = vim.uri_from_bufnr(bufnr), position = position })
end

--- Send the hover signal on |CursorHold| (after 'updatetime' ms still) in buffers the server serves.
function M.attach()
  local group = vim.api.nvim_create_augroup('deepseek.ahead', { clear = true })
  vim.api.nvim_create_autocmd('CursorHold', { group = group, callback = function(ev)
    if ev.buf == vim.api.nvim_get_current_buf() and require('deepseek').client(ev.buf) then M.hover() end
  end })
end

return M
