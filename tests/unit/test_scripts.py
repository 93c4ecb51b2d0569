"""Scripts run for real: order, environment, failures, hangs; the loop is never blocked."""
import asyncio
import os
import time

import pytest

from tincapp.io.scripts import ScriptRunner, describe_status, script_argv, script_path


def write_script(path, body, mode=0o755):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(body)
    os.chmod(path, mode)


def run(coro):
    return asyncio.run(coro)


def test_missing_script_is_skipped(tmp_path):
    assert script_path(str(tmp_path), "tinc-up") is None

    async def go():
        r = ScriptRunner(str(tmp_path))
        r.run("tinc-up")
        await r.drain()
        return r.failures
    assert run(go()) == 0


def test_order_and_environment(tmp_path):
    log = tmp_path / "log"
    for name in ("tinc-up", "host-up", "hosts/alice-up", "subnet-up"):
        write_script(str(tmp_path / name),
                     f'#!/bin/sh\nsleep 0.05\necho "{name} $NAME $NETNAME $NODE '
                     f'$SUBNET [$WEIGHT] $DEBUG" >> {log}\n')

    async def go():
        r = ScriptRunner(str(tmp_path), {"NAME": "bob", "NETNAME": "vpn", "DEBUG": 0})
        r.run("tinc-up")
        r.run("host-up", NODE="alice", REMOTEADDRESS="192.0.2.1", REMOTEPORT="655")
        r.run("hosts/alice-up", NODE="alice")
        r.run("subnet-up", NODE="alice", SUBNET="10.1.0.0/16", WEIGHT="")
        await r.drain()
        return r.failures
    assert run(go()) == 0
    assert log.read_text().splitlines() == [
        "tinc-up bob vpn   [] 0",
        "host-up bob vpn alice  [] 0",
        "hosts/alice-up bob vpn alice  [] 0",
        "subnet-up bob vpn alice 10.1.0.0/16 [] 0",
    ]


def test_script_without_shebang_runs_through_the_shell(tmp_path):
    out = tmp_path / "out"
    write_script(str(tmp_path / "tinc-up"), f"echo plain > {out}\n")

    async def go():
        r = ScriptRunner(str(tmp_path))
        r.run("tinc-up")
        await r.drain()
    run(go())
    assert out.read_text() == "plain\n"


def test_interpreter_and_path_with_spaces(tmp_path):
    base = tmp_path / "net work"
    out = tmp_path / "out"
    write_script(str(base / "tinc-up.sh"), f"echo via-interpreter > '{out}'\n", mode=0o644)

    async def go():
        r = ScriptRunner(str(base), interpreter="/bin/sh", extension=".sh")
        r.run("tinc-up")
        await r.drain()
        return r.failures
    assert run(go()) == 0
    assert out.read_text() == "via-interpreter\n"
    assert script_argv("/x y", "/bin/bash")[-1] == "/x y"


def test_failures_are_counted_and_logged(tmp_path, caplog):
    write_script(str(tmp_path / "host-up"), "#!/bin/sh\nexit 3\n")
    write_script(str(tmp_path / "host-down"), "#!/bin/sh\nkill -TERM $$\n")
    write_script(str(tmp_path / "tinc-up"), "not executable\n", mode=0o644)

    async def go():
        r = ScriptRunner(str(tmp_path))
        for name in ("host-up", "host-down", "tinc-up"):
            r.run(name)
        await r.drain()
        return r.failures
    assert run(go()) == 3
    text = caplog.text
    assert "Script host-up exited with non-zero status 3" in text
    assert "Script host-down was killed by signal 15 (SIGTERM)" in text
    assert "Script tinc-up exited with non-zero status 126" in text


def test_hanging_script_is_killed_and_never_blocks_the_loop(tmp_path):
    write_script(str(tmp_path / "tinc-up"), "#!/bin/sh\nsleep 30 &\nsleep 30\n")
    after = tmp_path / "after"
    write_script(str(tmp_path / "host-up"), f"#!/bin/sh\ntouch {after}\n")

    async def go():
        r = ScriptRunner(str(tmp_path), timeout_s=0.5)
        r.run("tinc-up")
        r.run("host-up")
        ticks = 0
        start = time.monotonic()
        while time.monotonic() - start < 0.3:      # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        await r.drain()
        return ticks, r.failures, time.monotonic() - start
    ticks, failures, elapsed = run(go())
    assert ticks >= 10
    assert failures == 1
    assert after.exists()                          # the queue went on after the kill
    assert elapsed < 5


@pytest.mark.parametrize("code,text", [(0, None), (2, "exited with non-zero status 2"),
                                       (-9, "was killed by signal 9 (SIGKILL)")])
def test_describe_status(code, text):
    assert describe_status(code) == text
