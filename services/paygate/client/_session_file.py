"""The `paygate` CLI's saved login: $XDG_CONFIG_HOME/paygate/session.json, mode 0600.

The file holds a bearer token, so it is created readable by its owner only, in a
directory only its owner can enter, and replaced atomically so that a crash never leaves
half a file behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import secrets
from collections.abc import Mapping

SESSION_FILE_NAME = "session.json"
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class SessionFileError(Exception):
    """The session file exists but cannot be read as a session."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredSession:
    gateway: str
    username: str
    access_token: str = dataclasses.field(repr=False)  # never shown in tracebacks
    expire_time: datetime.datetime

    def expired(self, now: datetime.datetime) -> bool:
        return now >= self.expire_time


def session_path(environ: Mapping[str, str]) -> pathlib.Path:
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    config_home = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config_home):
        config_home = os.path.join(os.path.expanduser("~"), ".config")
    return pathlib.Path(config_home) / "paygate" / SESSION_FILE_NAME


def load_session(path: pathlib.Path) -> StoredSession | None:
    """The saved session, or None when there is none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StoredSession(
            gateway=str(data["gateway"]),
            username=str(data["username"]),
            access_token=str(data["access_token"]),
            expire_time=datetime.datetime.fromisoformat(str(data["expire_time"])),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SessionFileError(
            f"cannot read the saved session {path} ({type(exc).__name__}):"
            " delete it and log in again"
        ) from None


def save_session(path: pathlib.Path, session: StoredSession) -> None:
    text = json.dumps(
        {
            "gateway": session.gateway,
            "username": session.username,
            "access_token": session.access_token,
            "expire_time": session.expire_time.isoformat(),
        }
    )
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    # mkdir's mode is ignored for a directory that already exists, and is masked by umask.
    os.chmod(path.parent, DIRECTORY_MODE)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_session(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)
