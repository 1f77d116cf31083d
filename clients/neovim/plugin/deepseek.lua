-- Commands of the deepseek-lsp plugin. Call require('deepseek').setup{...} to start the server.
if vim.g.loaded_deepseek then return end
vim.g.loaded_deepseek = true

local function cmd(name, fn, opts)
  vim.api.nvim_create_user_command(name, fn, vim.tbl_extend('force', { range = true }, opts or {}))
end
cmd('DeepSeekExplain', function(o) require('deepseek.actions').explain(o) end)
cmd('DeepSeekRefactor', function(o) require('deepseek.actions').refactor(o) end, { nargs = '?' })
cmd('DeepSeekTests', function(o) require('deepseek.actions').tests(o) end)
cmd('DeepSeekChat', function(o)
  local chat = require('deepseek.chat')
  local range = o.range > 0 and { start = { line = o.line1 - 1, character = 0 },
                                  ['end'] = { line = o.line2, character = 0 } } or nil
  if o.args ~= '' then return chat.send(o.args, range) end
  chat.ask(range)  -- the chat split opens and the server reads ahead while the message is typed
end, { nargs = '?' })
-- The agent on a task (with a range: about those lines); its steps stream into the chat split (:help deepseek-agent).
cmd('DeepSeekAgent', function(o)
  local range = o.range > 0 and { start = { line = o.line1 - 1, character = 0 },
                                  ['end'] = { line = o.line2, character = 0 } } or nil
  local function go(task) if task and vim.trim(task) ~= '' then require('deepseek.agent').run(vim.trim(task), range) end end
  if o.args ~= '' then return go(o.args) end
  vim.ui.input({ prompt = 'deepseek agent> ' }, go)
end, { nargs = '?' })
cmd('DeepSeekAgentStop', function() require('deepseek.agent').stop() end, { range = false })
-- Trust the current project (its code may run in the sandbox: Write tests), or with ! stop trusting it.
cmd('DeepSeekTrust', function(o) require('deepseek.trust').set(not o.bang) end, { range = false, bang = true })
cmd('DeepSeekSuggest', function() require('deepseek.inline').request(true) end, { range = false })
-- A code block of a chat reply, under the cursor in the chat buffer (:help deepseek-chat).
cmd('DeepSeekInsert', function() require('deepseek.chat').insert() end, { range = false })
cmd('DeepSeekCopy', function() require('deepseek.chat').copy() end, { range = false })
cmd('DeepSeekApply', function() require('deepseek.chat').apply() end, { range = false })
