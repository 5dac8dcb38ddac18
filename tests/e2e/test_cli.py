"""The command line as a newcomer uses it (issue 23's smaller items): the
banner's token command works for the server's data directory, and piping a
command's output into `head` ends quietly."""

from __future__ import annotations

import shlex
import subprocess

from conftest import BIN, Client


def test_the_banner_prints_the_token_command_for_its_data_directory(make_server):
    server = make_server()
    line = next(l for l in server.stdout().splitlines() if l.startswith("get a token: "))
    command = shlex.split(line.removeprefix("get a token: "))
    assert command[:4] == ["convo-local", "token", "--sub", "alice"]
    assert "--data-dir" in command and str(server.data_dir) in command, line
    out = subprocess.run([BIN, *command[1:]], capture_output=True, text=True, timeout=30, env=server.env)
    assert out.returncode == 0, out.stderr
    # The token it mints is accepted by that server.
    status, _, _ = Client(server.base_url, out.stdout.strip()).get("/conversations")
    assert status == 200


def test_a_closed_pipe_ends_the_output_quietly():
    for args in (["manifest"], ["openapi"]):
        p = subprocess.run(f"{shlex.quote(BIN)} {' '.join(args)} | head -c 10", shell=True,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "panicked" not in p.stderr and "Broken pipe" not in p.stderr, p.stderr
        assert len(p.stdout) == 10
