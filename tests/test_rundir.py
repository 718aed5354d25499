"""Run directories (harness/rundir.py): one writer per run directory, an exclusive lock on ``<run>/.lock``; a second
writer is one error naming the holder and changes nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

from harness.store import read_record

from conftest import PROTONET, mark_unfinished, one_line_error, run_cli, snapshot


def test_a_second_writer_of_a_run_directory_is_refused(run_copy, capsys):
    mark_unfinished(run_copy)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import fcntl, os, socket, sys
        handle = open({str(run_copy / ".lock")!r}, "a+")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.truncate(0)
        handle.write(f"pid {{os.getpid()}} on host {{socket.gethostname()}} since now")
        handle.flush()
        print("locked", flush=True)
        sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run_copy)
        assert run_cli("run", *PROTONET, "--run-dir", run_copy, "--resume") == 2
        one_line_error(capsys, f"is in use by pid {holder.pid} on host {socket.gethostname()}")
        assert snapshot(run_copy) == before
    finally:
        holder.communicate("")
    assert run_cli("run", *PROTONET, "--run-dir", run_copy, "--resume") == 0  # released: the run continues
    assert read_record(run_copy)["status"] == "ok"
