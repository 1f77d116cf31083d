-- deepseek-lsp for Neovim 0.11+: starts the server, shows inline suggestions, runs the
-- assistant commands. Everything smart lives in the server; this file only wires it.
local M = {}

M.config = {
  cmd = { 'deepseek-lsp' },               -- the server; a full path works too
  filetypes = require('deepseek.languages'),  -- generated from the server's table (server/languages.py)
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml' },
  settings = {},                           -- the server's `deepseek` settings (README.md, "Settings")
  auto = true,                             -- ask for a suggestion as you type
  read_ahead = true,                       -- tell the server what you are about to ask (:help deepseek-read-ahead)
  trusted = {},                            -- folders whose code may run (Write tests), beside :DeepSeekTrust's list
  -- Insert-mode keys, buffer-local in buffers the server attaches to (:help deepseek-keys). false: no keys
  -- at all (bind the <Plug> mappings yourself); a key set to false: not that one.
  keys = { accept = '<Tab>', accept_word = '<M-Right>', accept_line = '<M-Down>',
           next = '<M-]>', prev = '<M-[>', dismiss = '<C-]>' },
}

--- The running deepseek client for a buffer, or nil.
function M.client(bufnr)
  return vim.lsp.get_clients({ name = 'deepseek', bufnr = bufnr or 0 })[1]
end

--- Configure and enable the server. opts override M.config (see above).
function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', M.config, opts or {})
  local cfg = M.config
  -- An empty Lua table would be sent as a JSON array: send an empty object instead.
  local settings = next(cfg.settings) == nil and vim.empty_dict() or cfg.settings
  vim.lsp.config('deepseek', {
    cmd = cfg.cmd,
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    settings = { deepseek = settings },
    init_options = settings,
    -- Trust is said explicitly: a server that hears nothing runs no code of the project (:help deepseek-trust).
    before_init = function(params, config)
      params.initializationOptions = vim.tbl_extend('force', {}, settings,
        { workspaceTrusted = require('deepseek.trust').is_trusted(config.root_dir) })
    end,
    handlers = {
      ['deepseek/chatDelta'] = function(_, result) require('deepseek.chat').on_delta(result) end,
      ['deepseek/agentStep'] = function(_, result) require('deepseek.agent').on_step(result) end,
    },
    -- The code action `deepseek: Fix` runs the agent here, so its steps and fix show in the chat buffer.
    commands = { ['deepseek.agent'] = function(command, ctx) require('deepseek.agent').command(command, ctx) end },
  })
  vim.lsp.enable('deepseek')
  require('deepseek.inline').attach(cfg)
  require('deepseek.ahead').attach()
end

--- Merge `settings` into the server's settings and tell the running server (workspace/didChangeConfiguration):
--- it applies them without a restart (a model setting reloads the model in the same process).
function M.set_settings(settings)
  M.config.settings = vim.tbl_deep_extend('force', M.config.settings, settings or {})
  for _, client in ipairs(vim.lsp.get_clients({ name = 'deepseek' })) do
    client.settings = { deepseek = M.config.settings }
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
end

return M
