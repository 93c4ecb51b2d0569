"""Running tinc's scripts (tinc-up, host-up, hosts/NAME-up, subnet-up, ...).

Owns: finding a script, building its environment and running it. tinc runs scripts with
system() and waits, so a slow script stalls the whole daemon. We keep tinc's ordering (scripts
run one at a time, in the order of the events that caused them) but run them from a queue in
the background of the event loop, with a time limit, so a script that hangs or fails is logged
and never blocks packets or the meta protocol.

What a script sees is tinc's: `CONFBASE/<name><ScriptsExtension>`, run through /bin/sh (so a
file without a #! line still runs as a shell script, as with system()), or as
`<ScriptsInterpreter> "<path>"`; no arguments; the daemon's environment plus NETNAME, NAME,
DEVICE, INTERFACE, DEBUG and the script's own variables (spec/scripts.md).
"""
import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


def script_path(confbase, name, extension=""):
    """Path of script `name` (e.g. "tinc-up", "hosts/alice-up"), or None if there is none.
    COMPAT: tinc checks only that the file exists; a non-executable one fails when run."""
    path = os.path.join(confbase, name + extension)
    return path if os.path.exists(path) else None


def script_argv(path, interpreter=None):
    """The command that runs `path` as tinc's system("\\"path\\"") or
    system("interpreter \\"path\\"") would, without quoting problems: the path is $0.
    `exec` lets a signal that kills the script show as such instead of as sh's status 128+N;
    sh still runs a file without a #! line as a shell script."""
    if interpreter:
        return ["/bin/sh", "-c", f'exec {interpreter} "$0"', path]
    return ["/bin/sh", "-c", 'exec "$0"', path]


def script_env(base, extra, inherited=None):
    """The environment of one script: the daemon's, then `base` (NETNAME, NAME, ...), then the
    script's variables. None values leave a variable out."""
    env = dict(os.environ if inherited is None else inherited)
    for source in (base, extra):
        for key, value in source.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
    return env


def describe_status(returncode):
    """tinc's log wording for a script's exit status, or None for success."""
    if returncode == 0:
        return None
    if returncode < 0:
        sig = -returncode
        try:
            signame = signal.Signals(sig).name
        except ValueError:
            signame = "unknown signal"
        return f"was killed by signal {sig} ({signame})"
    return f"exited with non-zero status {returncode}"


class ScriptRunner:
    """Runs scripts one at a time from a queue on the running asyncio loop.

    `base_env` is updated by its owner (the daemon) as NAME, DEVICE, INTERFACE and DEBUG
    become known. Not thread-safe; use from the event loop's thread."""

    def __init__(self, confbase, base_env=None, interpreter=None, extension="",
                 timeout_s=DEFAULT_TIMEOUT_S):
        self.confbase = confbase
        self.base_env = dict(base_env or {})
        self.interpreter = interpreter
        self.extension = extension
        self.timeout_s = timeout_s
        self._queue = asyncio.Queue()
        self._worker = None
        self.failures = 0          # scripts that failed, timed out or could not run

    def run(self, name, **extra_env):
        """Queue script `name` with extra variables; returns at once. Missing scripts are
        skipped when their turn comes (so a script created meanwhile still runs)."""
        self._queue.put_nowait((name, extra_env))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def drain(self):
        """Wait until every queued script has finished (shutdown, tests)."""
        await self._queue.join()

    async def _work(self):
        while True:
            try:
                name, extra = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await self._run_one(name, extra)
            except Exception:      # a bug here must not stop the queue
                log.exception("Error running script %s", name)
                self.failures += 1
            finally:
                self._queue.task_done()

    async def _run_one(self, name, extra):
        path = script_path(self.confbase, name, self.extension)
        if path is None:
            return
        log.info("Executing script %s", name)
        env = script_env(self.base_env, extra)
        try:
            proc = await asyncio.create_subprocess_exec(
                *script_argv(path, self.interpreter), env=env, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True)
        except OSError as e:
            log.error("Error executing script %s: %s", name, e.strerror or e)
            self.failures += 1
            return
        try:
            returncode = await asyncio.wait_for(proc.wait(), self.timeout_s)
        except asyncio.TimeoutError:
            # DEVIATION: tinc waits forever. Kill the script's whole process group.
            log.error("Script %s did not finish within %g s, killing it", name, self.timeout_s)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            self.failures += 1
            return
        problem = describe_status(returncode)
        if problem:
            log.error("Script %s %s", name, problem)
            self.failures += 1
