-- :DeepSeekExplain, :DeepSeekRefactor, :DeepSeekTests on a visual selection (or the function
-- around the cursor): the server's deepseek.explain / refactor / writeTests commands.
local M = {}

local function range_of(opts)
  if opts and opts.range and opts.range > 0 then  -- a :'<,'> command range (whole lines)
    return { start = { line = opts.line1 - 1, character = 0 }, ['end'] = { line = opts.line2, character = 0 } }
  end
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  return { start = { line = row, character = 0 }, ['end'] = { line = row, character = 0 } }
end

local function run(command, arg, on_result)
  local client = require('deepseek').client(0)
  if not client then return vim.notify('deepseek: the server is not running here', vim.log.levels.WARN) end
  client:request('workspace/executeCommand', { command = command, arguments = { arg } }, function(err, result)
    if err then return vim.notify('deepseek: ' .. (err.message or tostring(err)), vim.log.levels.ERROR) end
    if type(result) ~= 'table' then return vim.notify('deepseek: ' .. command .. ' gave no answer', vim.log.levels.WARN) end
    on_result(result)
  end, 0)
end

function M.explain(opts)
  local chat = require('deepseek.chat')
  chat.open()
  chat.heading('Explain')
  chat.begin(nil)  -- an explanation is a session of its own: its pieces are shown
  local source = vim.api.nvim_get_current_buf()
  run('deepseek.explain', { uri = vim.uri_from_bufnr(0), range = range_of(opts) }, function(result)
    chat.session = result.sessionId or chat.session
    chat.begin(false)  -- done: later pieces of other sessions are not this one's
    chat.ahead(nil, source)  -- a follow-up question continues the explanation's session
  end)
end

function M.refactor(opts)
  local instruction = opts and opts.args ~= '' and opts.args or nil
  run('deepseek.refactor', { uri = vim.uri_from_bufnr(0), range = range_of(opts), instruction = instruction },
    function(result)
      vim.notify(result.applied and 'deepseek: refactored' or ('deepseek: not changed: ' .. (result.reason or '')))
    end)
end

function M.tests(opts)
  run('deepseek.writeTests', { uri = vim.uri_from_bufnr(0), range = range_of(opts) }, function(result)
    if not result.applied then return vim.notify('deepseek: no tests: ' .. (result.reason or '')) end
    local mutants = result.mutants ~= vim.NIL and result.mutants or nil  -- mutation score (null: not run)
    vim.notify(string.format('deepseek: tests in %s (%s)', vim.uri_to_fname(result.uri),
      result.ran and (mutants and mutants.summary or (#(result.failed or {}) .. ' failing')) or 'not run'),
      mutants and mutants.weak and vim.log.levels.WARN or nil)
  end)
end

return M
