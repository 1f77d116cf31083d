-- Neovim 0.11+ configuration for deepseek-lsp. Put this folder on 'runtimepath'
-- (or copy this file to ~/.config/nvim/lsp/deepseek.lua) and call vim.lsp.enable('deepseek').
-- The full plugin (chat panel, commands) is its own piece of work: see README.md.
return {
  cmd = { 'deepseek-lsp' },
  filetypes = { 'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact',
                'go', 'rust', 'java', 'c', 'cpp', 'lua' },
  root_markers = { '.git' },
  -- Keys and defaults: README.md, "Settings".
  settings = { deepseek = {} },
}
