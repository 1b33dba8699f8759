"""The turnkey session: a login shell (or the requested command) as the user running this process.

No privilege change: the process cannot become anyone else, so :func:`process_user` is the only local
user a turnkey server serves (``listen_ssh`` refuses any other mapping at authentication). With a PTY
request the shell gets a pseudo-terminal (``pty.openpty``) as its controlling terminal, sized from the
client's request and resized on its window-change messages; without one, pipes (stdout and stderr
apart, as OpenSSH's ``sshd``). The session's exit status is the child's (a signal: 128 + N).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import pwd
import struct
import termios
from typing import Any

import asyncssh

__all__ = ["process_user", "run_login_shell"]

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def process_user() -> pwd.struct_passwd:
    return pwd.getpwuid(os.getuid())


def _env(user: pwd.struct_passwd, term: str | None, accepted: dict[str, str]) -> dict[str, str]:
    env = {**accepted, "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
           "SHELL": user.pw_shell or "/bin/sh", "PATH": os.environ.get("PATH", _PATH)}
    if term:
        env["TERM"] = term
    return env


def _set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    cols, rows, px_w, px_h = size
    if cols and rows:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, px_w, px_h))


def _exit_status(code: int) -> int:
    return code if code >= 0 else 128 - code


async def run_login_shell(process: asyncssh.SSHServerProcess[bytes], accepted_env: dict[str, str]) -> int:
    """Run the session's command (or a login shell) for ``process``; returns the exit status."""
    user = process_user()
    shell = user.pw_shell or "/bin/sh"
    command = process.command
    argv = [shell, "-c", command] if command else [shell, "-l"]
    term = process.term_type
    env = _env(user, term, accepted_env)
    cwd = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
    if not term:  # no PTY: pipes
        child = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                     stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
                                                     start_new_session=True)
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        copies = [asyncio.create_task(_copy_out(child.stdout, process.stdout)),
                  asyncio.create_task(_copy_out(child.stderr, process.stderr))]
        feeder = asyncio.create_task(_copy_in(process, child.stdin))
        try:
            code = await child.wait()
            await asyncio.wait(copies, timeout=2.0)  # output still in the pipes after the exit
            await process.stdout.drain()
        finally:
            feeder.cancel()
            for t in copies:
                t.cancel()
            _kill(child)
        return _exit_status(code)
    master, slave = pty.openpty()
    try:
        _set_winsize(slave, process.term_size)
        child = await asyncio.create_subprocess_exec(*argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                                     cwd=cwd, start_new_session=True,
                                                     preexec_fn=_take_controlling_tty)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    os.close(slave)
    return await _pump_pty(process, child, master)


async def _copy_out(src: asyncio.StreamReader, dst: asyncssh.SSHWriter[bytes]) -> None:
    """The child's output to the channel until EOF (every byte sent before the exit status)."""
    while data := await src.read(65536):
        dst.write(data)
        await dst.drain()


async def _copy_in(process: asyncssh.SSHServerProcess[bytes], dst: asyncio.StreamWriter) -> None:
    """The client's input to the child; its EOF closes the child's stdin."""
    try:
        while data := await process.stdin.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, asyncssh.Error):  # the child exited (broken pipe) or the channel went away
        pass
    finally:
        dst.close()


def _take_controlling_tty() -> None:
    """In the child, after ``setsid``: its stdin (the PTY) becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _kill(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, 9)


async def _pump_pty(process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process,
                    master: int) -> int:
    """Copy the PTY master to the channel and the channel to it until the child exits."""
    loop = asyncio.get_running_loop()
    os.set_blocking(master, False)
    out_done = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd closed (the shell and its children exited)
            data = b""
        if not data:
            loop.remove_reader(master)
            if not out_done.done():
                out_done.set_result(None)
            return
        process.stdout.write(data)

    loop.add_reader(master, readable)

    async def from_client() -> None:
        while True:
            try:
                data: Any = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as e:
                _set_winsize(master, (e.width, e.height, e.pixwidth, e.pixheight))
                continue
            except asyncssh.BreakReceived:
                continue
            if not data:
                return
            view = memoryview(data)
            while view:
                try:
                    n = os.write(master, view)
                except BlockingIOError:
                    await asyncio.sleep(0.01)  # the PTY's input buffer is full: the shell reads it soon
                    continue
                view = view[n:]

    feeder = asyncio.create_task(from_client())
    try:
        code = await child.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(out_done, 2.0)  # the last output after the exit
    finally:
        feeder.cancel()
        loop.remove_reader(master)
        os.close(master)
        _kill(child)
    with contextlib.suppress(Exception):
        await process.stdout.drain()
    return _exit_status(code)
