-- :DeepSeekAgent: the server's agent (deepseek.agent) on a task, shown in the chat buffer. Each step is
-- appended as the server sends it (deepseek/agentStep): a line `[step 2] run_tests ok (1.4 s)`, then
-- its thought, its tool call and the tool's observation, indented (a long observation folded); then
-- the answer, the proposed edits as a diff and the check of the workspace's tests. A verified fix is
-- applied (deepseek.agentApply) only when the user says yes. The contract is docs/PROTOCOL.md.
local M = {}

local running = nil  -- the run being shown: { client, request, runId (from its first step), seen = {[index] = true} }
local past = {}      -- runIds of earlier runs: a late step of a stopped run is not taken for the next one's

local function chat() return require('deepseek.chat') end

--- Append `lines` to the chat buffer; lines from `fold` on (1-based in `lines`) are folded when the chat
--- window folds by hand ('foldmethod' manual, Neovim's default).
local function show(lines, fold)
  local c = chat()
  local bufnr = c.open()
  local first = vim.api.nvim_buf_line_count(bufnr)  -- the line `append` continues
  local above = vim.api.nvim_buf_get_lines(bufnr, math.max(first - 2, 0), first, false)
  if lines[1] == '' and #above == 2 and above[1] == '' and above[2] == '' then
    lines = vim.list_slice(lines, 2)  -- a blank line is there already (under a heading)
    fold = fold and fold - 1
  end
  c.append(table.concat(lines, '\n') .. '\n')
  local win = vim.fn.bufwinid(bufnr)
  if fold and win ~= -1 and vim.wo[win].foldmethod == 'manual' then
    pcall(vim.api.nvim_win_call, win, function()
      vim.cmd(('%d,%dfold'):format(first + fold - 1, first + #lines - 1))
    end)
  end
end

--- A step as lines: `[step N] tool ok|FAILED (S s)`, then the thought, the call and the observation,
--- each indented; the second result is the index of the observation's first line (what is folded).
function M.step_lines(step)
  local lines = { ('[step %d] %s %s (%.1f s)'):format(step.index, step.tool, step.ok and 'ok' or 'FAILED', step.seconds or 0) }
  local function add(prefix, text)
    for i, l in ipairs(vim.split(text or '', '\n', { plain = true, trimempty = true })) do
      lines[#lines + 1] = (i == 1 and prefix or (' '):rep(#prefix)) .. l
    end
  end
  add('    Thought: ', step.thought)
  local args = type(step.arguments) == 'table' and next(step.arguments) ~= nil and vim.json.encode(step.arguments) or ''
  lines[#lines + 1] = '    Call: ' .. step.tool .. (args ~= '' and (' ' .. args) or '')
  local obs = #lines + 1
  for _, l in ipairs(vim.split(step.observation or '', '\n', { plain = true, trimempty = true })) do
    lines[#lines + 1] = '    | ' .. l
  end
  return lines, obs
end

--- A deepseek/agentStep notification (the plugin's handler): appended to the chat buffer when it is a
--- step of the run being shown (its id is learnt from its first step).
function M.on_step(params)
  if type(params) ~= 'table' or type(params.runId) ~= 'string' or type(params.step) ~= 'table' or not running then return end
  local step = params.step
  if type(step.index) ~= 'number' or type(step.tool) ~= 'string' then return end
  if running.runId == nil and past[params.runId] then return end
  running.runId = running.runId or params.runId
  if params.runId ~= running.runId or running.seen[step.index] then return end
  running.seen[step.index] = true
  vim.schedule(function()
    local lines, obs = M.step_lines(step)
    show(lines, #lines - obs >= 2 and obs or nil)  -- an observation of 3 lines or more is folded (zo opens it)
  end)
end

--- Why a run's fix cannot be applied, or nil when it can (the server's `verified`).
function M.why_not(result)
  if result.verified then return nil end
  if type(result.edits) ~= 'table' or #result.edits == 0 then return 'No edit was proposed: nothing to apply.' end
  if result.outcome ~= 'finished' then return ('Not applicable: the run did not finish (%s).'):format(result.outcome) end
  local check = type(result.check) == 'table' and result.check or nil
  return check and ('Not verified, so not applicable: ' .. check.summary) or 'Not verified, so not applicable.'
end

--- The end of a run as lines: how it ended, the answer, each edit as a diff, the check, and why it
--- cannot be applied (when not verified).
function M.result_lines(result)
  local steps = type(result.steps) == 'table' and #result.steps or 0
  local n = ('%d step%s (%d s)'):format(steps, steps == 1 and '' or 's', math.floor((result.seconds or 0) + 0.5))
  local how = ({ finished = 'Finished after ', budget = 'Stopped at the step or time budget after ',
                 cancelled = 'Cancelled after ' })[result.outcome] or 'Stopped by an error after '
  local bad = (result.malformed or 0) > 0 and ('; %d without a valid tool call'):format(result.malformed) or ''
  local lines = { '', how .. n .. bad .. '.', '' }
  vim.list_extend(lines, vim.split(result.answer or '', '\n', { plain = true }))
  local diff = (vim.text and vim.text.diff) or vim.diff
  local function whole(s) return (s == '' or s:sub(-1) == '\n') and s or (s .. '\n') end
  for _, e in ipairs(type(result.edits) == 'table' and result.edits or {}) do
    local name = vim.fn.fnamemodify(vim.uri_to_fname(e.uri), ':.')
    local hunk = diff(whole(e.old or ''), whole(e.new or ''), { ctxlen = 2 })
    vim.list_extend(lines, { '', 'Edit of ' .. name .. ':', '```diff', '--- ' .. name, '+++ ' .. name })
    vim.list_extend(lines, vim.split(hunk, '\n', { plain = true, trimempty = true }))
    lines[#lines + 1] = '```'
  end
  if type(result.check) == 'table' then
    local failed = type(result.check.failed) == 'table' and #result.check.failed > 0
      and (' (failed: ' .. table.concat(result.check.failed, ', ') .. ')') or ''
    vim.list_extend(lines, { '', ('Check: %s, %s%s'):format(result.check.verdict, result.check.summary, failed) })
  end
  local why = M.why_not(result)
  if why then vim.list_extend(lines, { '', why }) end
  return lines
end

--- Ask `Apply the fix? [y/N]` (|vim.ui.input()|) and, on yes, deepseek.agentApply {runId}: the server
--- sends the edits as one versioned workspace edit. `on_done(answer)` (tests) gets its {applied, reason}.
function M.offer_apply(client, run_id, bufnr, on_done)
  vim.ui.input({ prompt = 'deepseek: Apply the fix? [y/N] ' }, function(answer)
    if not answer or not answer:match('^%s*[yY]') then
      show({ '', 'Not applied (you said no).' })
      return on_done and on_done(nil)
    end
    client:request('workspace/executeCommand', { command = 'deepseek.agentApply', arguments = { { runId = run_id } } },
      function(err, result)
        if err then
          show({ '', 'Not applied: ' .. (err.message or tostring(err)) })
        elseif type(result) == 'table' then
          show({ '', result.applied and 'Applied.' or ('Not applied: ' .. (result.reason or '')) })
        end
        if on_done then on_done(err and { applied = false, reason = err.message } or result) end
      end, bufnr)
  end)
end

--- Run the agent on `message` (the task in words) about `range` (lines of the buffer; nil: none). `opts`:
--- `bufnr` (the buffer whose client runs it; default the current one), `uri` (the file it is about;
--- default that buffer's), `on_done(result, err)` (runs when the answer is shown: tests). Steps stream
--- into the chat buffer; at the end a verified fix is offered (|deepseek-agent|).
function M.run(message, range, opts)
  opts = opts or {}
  local bufnr = (opts.bufnr == nil or opts.bufnr == 0) and vim.api.nvim_get_current_buf() or opts.bufnr
  local client = require('deepseek').client(bufnr)
  if not client then return vim.notify('deepseek: the server is not running here', vim.log.levels.WARN) end
  if running then M.stop() end  -- one run at a time: the newer one wins
  local c = chat()
  c.open()
  c.begin(false)  -- a chat reply still being written stops showing here
  c.heading('Agent: ' .. message)
  local arg = { message = message, uri = opts.uri or vim.uri_from_bufnr(bufnr), range = range }
  local run = { client = client, seen = {} }
  running = run
  local _, request = client:request('workspace/executeCommand', { command = 'deepseek.agent', arguments = { arg } },
    function(err, result)
      if running ~= run then return end  -- stopped, or replaced by a newer run
      running = nil
      if type(result) == 'table' and type(result.runId) == 'string' then past[result.runId] = true end
      if err then
        show({ '', '(error: ' .. (err.message or tostring(err)) .. ')' })
      elseif type(result) ~= 'table' then
        show({ '', '(no answer)' })
      else
        show(M.result_lines(result))
      end
      if opts.on_done then opts.on_done(result, err) end
      if not err and type(result) == 'table' and result.verified then M.offer_apply(client, result.runId, bufnr) end
    end, bufnr)
  run.request = request
  vim.api.nvim_echo({ { 'deepseek: the agent is working (:DeepSeekAgentStop stops it)' } }, false, {})
  return run
end

--- :DeepSeekAgentStop: cancel the running agent ($/cancelRequest; the server stops within one token or one tool run).
function M.stop()
  local run = running
  if not run then return false end
  running = nil
  if run.runId then past[run.runId] = true end
  if run.request then run.client:cancel_request(run.request) end
  show({ '', 'Stopped.' })
  return true
end

--- The code action `deepseek: Fix` (a client command: |vim.lsp.ClientConfig| `commands`): its argument
--- {message, uri, range} is run here, so the steps and the fix show in the chat buffer.
function M.command(command, ctx)
  local arg = type(command.arguments) == 'table' and command.arguments[1] or nil
  if type(arg) ~= 'table' or type(arg.message) ~= 'string' or arg.message == '' then
    return vim.notify('deepseek: deepseek.agent needs a task', vim.log.levels.WARN)
  end
  return M.run(arg.message, arg.range, { bufnr = ctx.bufnr, uri = type(arg.uri) == 'string' and arg.uri or nil })
end

return M
