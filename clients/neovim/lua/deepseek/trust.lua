-- Workspace trust for deepseek-lsp: the server runs code from a project (Write tests, the
-- checks of a verified Refactor) only where the user said they trust it. The plugin keeps the
-- folders the user trusted with :DeepSeekTrust in stdpath('data')/deepseek/trusted.json, and
-- tells the server at start (initializationOptions.workspaceTrusted) and when it changes
-- (deepseek/workspaceTrust). A folder counts when it or a folder above it is listed, or is in
-- setup{ trusted = {...} }. Nothing in a project can add itself. (:help deepseek-trust)
local M = {}

local function file()
  return vim.fs.joinpath(vim.fn.stdpath('data'), 'deepseek', 'trusted.json')
end

local function normalize(dir)
  return vim.fs.normalize(vim.fn.fnamemodify(dir, ':p')):gsub('/$', '')
end

--- The folders the user trusted (a list of absolute paths).
function M.list()
  local f = io.open(file(), 'r')
  if not f then return {} end
  local ok, list = pcall(vim.json.decode, f:read('*a'))
  f:close()
  return ok and type(list) == 'table' and list or {}
end

local function save(list)
  vim.fn.mkdir(vim.fs.dirname(file()), 'p')
  local f = assert(io.open(file(), 'w'))
  f:write(vim.json.encode(list))
  f:close()
end

--- Whether `root` (a project folder) is trusted: it or a folder above it is listed.
function M.is_trusted(root)
  if not root then return false end
  root = normalize(root)
  local listed = vim.list_extend(vim.deepcopy(M.list()), vim.tbl_map(normalize, require('deepseek').config.trusted or {}))
  for _, dir in ipairs(listed) do
    dir = normalize(dir)
    if root == dir or vim.startswith(root, dir .. '/') then return true end
  end
  return false
end

--- Trust (or, with `trusted` false, stop trusting) the project of the current buffer, and tell its server.
function M.set(trusted)
  local client = require('deepseek').client(0)
  local root = client and client.root_dir or vim.fn.getcwd()
  root = normalize(root)
  local list = vim.tbl_filter(function(dir) return normalize(dir) ~= root end, M.list())
  if trusted then table.insert(list, root) end
  save(list)
  for _, c in ipairs(vim.lsp.get_clients({ name = 'deepseek' })) do
    if c == client or (c.root_dir and normalize(c.root_dir) == root) then
      c:notify('deepseek/workspaceTrust', { trusted = trusted })
    end
  end
  vim.notify(('deepseek: %s %s'):format(root, trusted and 'is trusted: Write tests and verified refactors run its code in the sandbox'
    or 'is no longer trusted: no code of it runs'))
end

return M
