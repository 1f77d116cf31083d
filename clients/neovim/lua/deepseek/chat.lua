-- The chat buffer: a split that shows replies as they stream (deepseek/chatDelta).
local M = { bufnr = nil, session = nil }

local function buffer()
  if M.bufnr and vim.api.nvim_buf_is_valid(M.bufnr) then return M.bufnr end
  M.bufnr = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_name(M.bufnr, 'deepseek://chat')
  vim.bo[M.bufnr].filetype = 'markdown'
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

--- A streamed piece of a reply (the server's deepseek/chatDelta notification).
function M.on_delta(params)
  if not params or not params.delta then return end
  vim.schedule(function() append(params.delta) end)
end

function M.heading(text) append('\n\n## ' .. text .. '\n\n') end

--- Send a message (with the current selection when `range` is given) and keep the session.
function M.send(message, range)
  local client = require('deepseek').client(0)
  if not client then return vim.notify('deepseek: the server is not running here', vim.log.levels.WARN) end
  M.open()
  M.heading('You: ' .. message)
  local arg = { message = message, sessionId = M.session, uri = vim.uri_from_bufnr(0), range = range }
  client:request('workspace/executeCommand', { command = 'deepseek.chat', arguments = { arg } }, function(err, result)
    if err then return append('\n(error: ' .. (err.message or tostring(err)) .. ')\n') end
    M.session = result.sessionId
    local refs = {}
    for _, r in ipairs(result.references or {}) do
      refs[#refs + 1] = string.format('%s:%d', vim.uri_to_fname(r.uri), r.range.start.line + 1)
    end
    if #refs > 0 then append('\n\nReferences: ' .. table.concat(refs, ', ') .. '\n') end
  end, 0)
end

return M
