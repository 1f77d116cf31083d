-- :checkhealth deepseek
local M = {}

function M.check()
  local health = vim.health
  health.start('deepseek-lsp')
  local cmd = require('deepseek').config.cmd[1]
  if vim.fn.executable(cmd) == 1 then
    health.ok('server found: ' .. vim.fn.exepath(cmd))
  else
    health.error('server not found: ' .. cmd, { 'pip install deepseek-lsp (see its README.md)',
      'or set cmd in require("deepseek").setup{ cmd = { "/path/to/deepseek-lsp" } }' })
    return
  end
  local client = require('deepseek').client(0) or vim.lsp.get_clients({ name = 'deepseek' })[1]
  if not client then
    return health.warn('the server is not running (open a file of a configured filetype)')
  end
  local result = client:request_sync('workspace/executeCommand', { command = 'deepseek.status' }, 5000, 0)
  local status = result and result.result
  if not status then return health.warn('no answer to deepseek.status') end
  local model = status.model or {}
  if model.loaded then
    health.ok(string.format('model %s (%s) loaded', model.name, model.family or '?'))
  elseif status.backend and status.backend.kind == 'openai' then
    health.ok('completions from ' .. (status.backend.url or '?'))
  else
    health.warn(string.format('model %s is %s', model.name or '?', model.state or '?'), { model.error })
  end
  local ram = status.ram or {}
  health.info(string.format('RAM: %s MB available, %s MB needed', ram.availableMb or '?', ram.neededMb or '?'))
  local index = status.index or {}
  health.info(string.format('index: %s, %s files, %s chunks', index.state, index.files, index.chunks))
  local c = status.completion or {}
  if c.modelAnswers and c.modelAnswers ~= vim.NIL then
    health.info(string.format('suggestions: %s from the model, %s from the cache, %s not shown (the model was unsure: '
      .. 'completion.minConfidence)', c.modelAnswers, c.cacheAnswers or 0, c.quietAnswers or 0))
  end
  if c.largeModel and c.largeModel ~= vim.NIL then
    health.info(string.format('suggestions you ask for: %s (%s so far); the last one by the %s model',
      c.largeModel, c.largeAnswers or 0, c.lastModel == 'large' and 'larger' or 'completion'))
  end
end

return M
