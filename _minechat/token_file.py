"""The token file: read a saved token, and save a new account's token once, whole, readable by its owner only."""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from typing import TYPE_CHECKING

from chat_io import ENCODING, NEWLINE, FileError, describe_error, lock_file

if TYPE_CHECKING:
    from pathlib import Path

# Windows Notepad saves UTF-8 with a byte-order mark; it is not part of the token.
TOKEN_FILE_ENCODING = "utf-8-sig"
# A token is a UUID; a file far longer than that is not a token file (or is /dev/zero).
TOKEN_FILE_LIMIT = 4096
# What the pre-check writes: longer than any token the server hands out (a UUID is 36 characters).
TOKEN_PROBE = b"0" * 64 + NEWLINE


def load_token(path: Path) -> str | None:
    """Return the token saved at path, or None if there is none."""
    try:
        # A FIFO would wait for a writer forever and /dev/zero never ends: only a regular file is read.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FileError(f"cannot read the token file {path}: it is not a regular file; choose another --token_path")
        with open(path, "rb") as file:
            raw = file.read(TOKEN_FILE_LIMIT + 1)
        if len(raw) > TOKEN_FILE_LIMIT:
            raise FileError(f"cannot read the token file {path}: it is far too long for a token; check --token_path")
        text = raw.decode(TOKEN_FILE_ENCODING)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise FileError(f"cannot read the token file {path}: {describe_error(error)}") from error
    return text.strip() or None


def resolve_token_path(path: Path) -> Path:
    """Return the file a token path really names, so a symlink is written through, not replaced."""
    from pathlib import Path  # here: pathlib is slow to import, and --help never resolves a token path

    return Path(os.path.realpath(path))


def check_token_owner(path: Path) -> None:
    """Refuse a token path that is, or leads to, a file or link of another user, or no regular file.

    A link planted in a shared folder would have us write our token into that user's own file.
    Where the platform has no owners (Windows), only the regular file is checked.
    """
    import stat  # here, not at the top: only a registration needs it

    me = os.geteuid() if hasattr(os, "geteuid") else None
    for follow, what in ((False, "it belongs"), (True, "it leads to a file that belongs")):
        try:
            info = os.stat(path, follow_symlinks=follow)
        except FileNotFoundError:
            return  # nothing there yet (or a link to nothing yet): the file is made, ours
        except OSError as error:
            raise FileError(f"cannot save the token to {path}: {describe_error(error)}") from error
        if me is not None and info.st_uid != me:
            raise FileError(f"cannot save the token to {path}: {what} to another user; choose another --token_path")
    if not stat.S_ISREG(info.st_mode):
        raise FileError(f"cannot save the token to {path}: it is not a regular file; choose another --token_path")


def write_durably(descriptor: int, data: bytes) -> None:
    """Write all of data to an open file and wait until it is on the disk."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]
    os.fsync(descriptor)


def check_token_path(path: Path) -> None:
    """Fail now, before registering, if the token could not be saved at path."""
    import tempfile  # here, not at the top: only a registration needs it, and importing it costs every start

    check_token_owner(path)
    folder = resolve_token_path(path).parent
    try:
        # Real bytes, synced: an empty file fits on a full disk, a token does not.
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            write_durably(descriptor, TOKEN_PROBE)
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except OSError as error:
        raise FileError(
            f"cannot save a token in {folder}: {describe_error(error)}; choose another --token_path"
        ) from error


class TokenTaken(FileError):
    """The token file holds another account's token: it is never replaced."""


def save_token(path: Path, token: str) -> None:
    """Save the token in a new file only its owner can read (through a symlink, to its target); never replace one.

    The file is created exclusively, whole: a link of a synced temporary file (an exclusive open where
    links are missing). A file that is there but holds no token is filled under a lock. If another
    registration got there first, TokenTaken says so and that token stays.
    """
    import tempfile  # as in check_token_path

    check_token_owner(path)
    target = resolve_token_path(path)
    data = (token + "\n").encode(ENCODING)
    try:
        # mkstemp creates the file with mode 0600, so the token is never readable by others.
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            try:
                write_durably(descriptor, data)
            finally:
                os.close(descriptor)
            created = _link_exclusively(temporary, target, data)
        finally:
            with suppress(OSError):
                os.unlink(temporary)
        if not created:
            _fill_empty_token_file(path, target, data)
    except FileError:
        raise
    except OSError as error:
        raise FileError(f"cannot save the token to {path}: {describe_error(error)}") from error


def _link_exclusively(temporary: str, target: Path, data: bytes) -> bool:
    """Create target holding data, never over an existing file; False if target is there already."""
    try:
        os.link(temporary, target)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_LINK_ERRNOS:
            raise
    # No hard links here (FAT, some network shares): an exclusive open of the final name instead.
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        return False
    try:
        lock_file(descriptor)  # a racing registration waits until the token is whole
        write_durably(descriptor, data)
    finally:
        os.close(descriptor)
    return True


# What link() says where a file system has no hard links.
_NO_LINK_ERRNOS = frozenset(
    code for code in (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS)
)


def _fill_empty_token_file(path: Path, target: Path, data: bytes) -> None:
    """Write data into an existing token file that holds no token; raise TokenTaken if it holds one."""
    descriptor = os.open(target, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        lock_file(descriptor)  # two registrations fill it one after the other
        if load_token(target) is not None:
            raise TokenTaken(f"cannot save the token to {path}: it holds another token now (saved meanwhile)")
        os.ftruncate(descriptor, 0)
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, 0o600)  # a file made by hand may be readable by others
        write_durably(descriptor, data)
    finally:
        os.close(descriptor)  # closing releases the lock
