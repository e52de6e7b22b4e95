"""Files, the one way: atomic writes, safe directory publishing, text and JSON reading.

Every output the project writes goes through here so three promises hold everywhere:
  - partial output never appears under a final name (write to a temporary sibling, then rename);
  - nothing the user had is lost: a directory is replaced only when it holds nothing but what an
    earlier save of ours wrote (or the caller says `overwrite`); leftovers of our own killed runs
    (`.tmp-NAME-PID-*` whose process is gone) are swept on the next save;
  - modes follow the umask (a team can read what a run wrote), not mkdtemp's private 0700.
Reading errors are one `BertJaxError` line naming the file and what was expected.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator

from bert_jax.errors import BertJaxError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed worker nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): existence is all we know


def _sweep_stale(parent: str, name: str) -> None:
    """Remove `.tmp-NAME-PID-*` siblings left by our own runs whose process no longer exists."""
    for path in glob.glob(os.path.join(glob.escape(parent), f".tmp-{glob.escape(name)}-*-*")):
        pid = os.path.basename(path)[len(f".tmp-{name}-") :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _check_replaceable(target: str, owned: Collection[str] | None, overwrite: bool) -> None:
    if not os.path.lexists(target) or overwrite:
        return
    if not os.path.isdir(target):
        raise BertJaxError(
            f"{target}: exists and is not a directory (pass --overwrite to replace it)"
        )
    if owned is None:
        return
    foreign = sorted(e for e in os.listdir(target) if e not in owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise BertJaxError(
            f"{target}: holds files this command did not write ({shown}); choose a new or empty "
            "directory, or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def staged_dir(
    target: str | os.PathLike, *, owned: Collection[str] | None = None, overwrite: bool = False
) -> Iterator[str]:
    """Yield a fresh temporary sibling of `target`; on success it replaces `target` in one rename.

    `owned`: the entry names an earlier save of this kind writes; an existing `target` holding
    anything else is refused (`overwrite=True` replaces it anyway). `owned=None`: the caller owns
    `target` outright (e.g. a file inside its own workdir). On error the temporary dir is removed.
    """
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    if os.path.commonpath([target, os.getcwd()]) == target and os.path.isdir(target):
        raise BertJaxError(f"{target}: is the current directory or holds it; choose another")
    _check_replaceable(target, owned, overwrite)
    os.makedirs(parent, exist_ok=True)
    _sweep_stale(parent, name)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        _check_replaceable(target, owned, overwrite)  # again: another process may have written
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: str, target: str) -> None:
    """Move directory `new` to `target`, replacing it; `target` is never missing or half-written
    for longer than between two renames."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    old = f"{new}.old"
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temporary sibling + rename)."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """`obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def append_jsonl(path: str | os.PathLike, obj: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


def read_text(
    path: str | os.PathLike, *, encoding: str = "utf-8", fallback_encoding: str | None = None
) -> str:
    """The file's text (a leading byte-order mark dropped); `fallback_encoding` (e.g. latin-1) is
    tried when `encoding` fails, else the error names the byte."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise BertJaxError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise BertJaxError(f"{path}: is a directory, expected a text file") from None
    except OSError as e:
        raise BertJaxError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        if fallback_encoding is None:
            raise BertJaxError(
                f"{path}: not {encoding} text (byte {e.start}: {e.reason}); "
                f"re-encode it as {encoding}"
            ) from None
        text = raw.decode(fallback_encoding)
    return text.removeprefix("\ufeff")


def check_utf8(path: str | os.PathLike) -> None:
    """Stream through `path` (any size) and fail with one line unless it is UTF-8 text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except OSError as e:
        raise BertJaxError(f"{os.fspath(path)}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise BertJaxError(f"{os.fspath(path)}: not UTF-8 ({e.reason})") from None


def read_json(path: str | os.PathLike, *, expect: type = dict):
    """Parsed JSON of `path`, which must be a `expect` (an object by default)."""
    text = read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BertJaxError(
            f"{os.fspath(path)}: invalid JSON ({e.msg} at line {e.lineno})"
        ) from None
    if not isinstance(obj, expect):
        raise BertJaxError(f"{os.fspath(path)}: expected a JSON {expect.__name__}")
    return obj


def import_tfds(what: str):
    """`tensorflow_datasets`, or one error line saying how to install it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise BertJaxError(
            f"{what} needs tensorflow-datasets: pip install 'bert-jax[tfds]'"
        ) from None
    return tfds
