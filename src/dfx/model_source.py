"""Model references: a local path, an ``https://`` URL or ``hf://ORG/REPO[@REVISION]/FILE``.

:func:`resolve_model` turns any of them into a local file. URLs are downloaded once into
the cache folder (``$DFX_HOME/models``, default ``~/.cache/dfx/models``), written atomically
and checked against a SHA-256 given as ``#sha256=...`` in the URL or separately; plain
``http://`` needs one. Hub references go through ``huggingface_hub`` (the ``hub`` extra) and
its own cache. With ``DFX_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` nothing is downloaded: a
cached file is used and a missing one is an error; a Hub that does not answer one request
is treated the same way, without huggingface_hub's retries and log lines. The file that
comes back is still just a candidate: the model loaders read it weights-only and check its
format as for any path.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import inspect
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dfx._version import __version__
from dfx.errors import DfxError
from dfx.extras import MissingExtra
from dfx.fingerprint import file_sha256
from dfx.progress import ProgressReporter, or_null

DOWNLOAD_TASK = "download"
"""The progress task of a download; its steps are bytes."""

_CHUNK = 1 << 20
_TIMEOUT_S = 30
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelReference:
    """Where a model file comes from, parsed from what the user typed."""

    kind: str
    """``path``, ``url`` or ``hub``."""
    text: str
    """The reference without its ``#sha256=`` fragment."""
    sha256: str | None
    """The expected SHA-256 (lower-case hex), or None when none was given."""
    repo_id: str | None = None
    """For ``hub``: ``ORG/REPO``."""
    revision: str | None = None
    """For ``hub``: the branch, tag or commit after ``@`` (None: the default branch)."""
    filename: str | None = None
    """For ``hub``: the file's path inside the repository."""


def dfx_home() -> Path:
    """dfx's own cache folder: ``$DFX_HOME``, default ``~/.cache/dfx``."""
    return Path(os.environ.get("DFX_HOME") or Path.home() / ".cache" / "dfx").expanduser()


def model_cache_dir() -> Path:
    """Where downloaded model files are kept: ``$DFX_HOME/models``."""
    return dfx_home() / "models"


def is_offline() -> bool:
    """Whether downloads are forbidden (``DFX_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true)."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("DFX_OFFLINE", "HF_HUB_OFFLINE")
    )


def resolve_model(
    reference: str | Path, sha256: str | None = None, *, progress: ProgressReporter | None = None
) -> Path:
    """The local file of a model reference: a path, an https:// URL or an hf:// reference.

    ``sha256`` (or ``#sha256=`` in the reference) is checked against the file's bytes; a
    new download that does not match is not kept, and a cached file that does not match
    is left in place (a mistyped hash must not cost a good download), its hash named.
    ``progress`` hears of downloads (task :data:`DOWNLOAD_TASK`, steps in bytes) and of the
    SHA-256 of an unpinned download.
    """
    parsed = parse_reference(reference, sha256)
    if parsed.kind == "url":
        return _from_url(parsed, or_null(progress))
    if parsed.kind == "hub":
        return _from_hub(parsed, or_null(progress))
    path = Path(parsed.text).expanduser()
    if parsed.sha256 is not None and path.is_file():
        actual = file_sha256(path)
        if actual != parsed.sha256:
            raise DfxError(
                f"{path} has SHA-256 {actual}, but {parsed.sha256} was expected; "
                "it is not the file you meant."
            )
    return path


def parse_reference(reference: str | Path, sha256: str | None = None) -> ModelReference:
    """Split a reference into its kind, location and expected SHA-256, checking its form."""
    if isinstance(reference, Path):
        return ModelReference("path", str(reference), _checked_sha256(sha256, "`sha256`"))
    text = str(reference)
    scheme = _SCHEME.match(text)
    if scheme is None:
        return ModelReference("path", text, _checked_sha256(sha256, "`sha256`"))
    kind = scheme.group(1).lower()
    if kind not in ("https", "http", "hf"):
        raise DfxError(
            f"model reference {text} has an unknown scheme '{kind}://'; "
            "use a file path, https://..., or hf://ORG/REPO[@REVISION]/FILE."
        )
    location, fragment = urllib.parse.urldefrag(text)
    expected = _expected_sha256(text, fragment, sha256)
    if kind == "hf":
        return _hub_reference(location, expected)
    if kind == "http" and expected is None:
        raise DfxError(
            f"the plain-http URL {location} needs a SHA-256 (#sha256=... in the URL, or "
            "`sha256`), because nothing else protects the download from tampering."
        )
    return ModelReference("url", location, expected)


def _expected_sha256(text: str, fragment: str, option: str | None) -> str | None:
    from_url = None
    if fragment:
        name, _, value = fragment.partition("=")
        if name.lower() != "sha256":
            raise DfxError(f"the fragment #{fragment} of {text} is not #sha256=<64 hex digits>.")
        from_url = _checked_sha256(value, "the #sha256= of the URL")
    from_option = _checked_sha256(option, "`sha256`")
    if from_url and from_option and from_url != from_option:
        raise DfxError(f"`sha256` {from_option} differs from the #sha256= in {text}.")
    return from_url or from_option


def _checked_sha256(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if not _HEX64.match(digest):
        raise DfxError(f"{where} must be 64 hexadecimal digits, got '{value}'.")
    return digest


def _hub_reference(location: str, expected: str | None) -> ModelReference:
    parts = location[len("hf://") :].split("/")
    if len(parts) < 3 or not all(parts):
        raise DfxError(
            f"{location} is not a Hub reference of the form hf://ORG/REPO[@REVISION]/FILE."
        )
    name, _, revision = parts[1].partition("@")
    if not name or (revision == "" and "@" in parts[1]):
        raise DfxError(f"{location} names an empty repository or revision.")
    return ModelReference(
        "hub",
        location,
        expected,
        repo_id=f"{parts[0]}/{name}",
        revision=urllib.parse.unquote(revision) or None,
        filename="/".join(parts[2:]),
    )


# --- https:// and http:// --------------------------------------------------------------


def url_cache_path(url: str) -> Path:
    """Where the file of ``url`` (without its fragment) is kept in the cache."""
    location, _ = urllib.parse.urldefrag(url)
    parts = urllib.parse.urlsplit(location)
    name = Path(urllib.parse.unquote(parts.path)).name or "model.pt"
    name = re.sub(r"[^\w.+-]", "_", name).lstrip(".") or "model.pt"
    host = re.sub(r"[^\w.-]", "_", parts.netloc) or "host"
    key = hashlib.sha256(location.encode()).hexdigest()[:16]
    return model_cache_dir() / host / key / name


def _from_url(reference: ModelReference, progress: ProgressReporter) -> Path:
    target = url_cache_path(reference.text)
    if target.is_file():  # no request at all: the cache is keyed by the URL
        if reference.sha256 is not None:
            _verify_cached(target, reference.sha256, reference.text)
        return target
    if is_offline():
        raise DfxError(
            f"{reference.text} is not in the cache folder {model_cache_dir()} and dfx is "
            f"offline (DFX_OFFLINE or HF_HUB_OFFLINE); copy the file to {target} to use it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            digest = _download(reference, target, handle, progress)
            handle.flush()
            os.fsync(handle.fileno())
        if reference.sha256 is not None and digest != reference.sha256:
            raise DfxError(_mismatch(reference.text, digest, reference.sha256))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if reference.sha256 is None:
        progress.notice(
            f"downloaded {reference.text} (sha256 {digest}); "
            f"pin it with `sha256` {digest} or #sha256={digest}"
        )
    return target


def _download(reference: ModelReference, target: Path, handle, progress) -> str:
    """Stream the URL into ``handle``; the SHA-256 of what was written."""
    url = reference.text
    request = urllib.request.Request(url, headers={"User-Agent": f"dfx/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise DfxError(
            f"cannot download {url}: the server answered {error.code} {error.reason}."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise DfxError(
            f"cannot download {url} ({reason}), and it is not in the cache folder "
            f"{model_cache_dir()}; copy the file to {target} to use it offline."
        ) from error
    with response:
        final = urllib.parse.urlsplit(response.geturl()).scheme
        if final != "https" and reference.sha256 is None:
            raise DfxError(
                f"{url} redirects to plain http, which needs a SHA-256 (`sha256`) to be trusted."
            )
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest, received = hashlib.sha256(), 0
        progress.start(DOWNLOAD_TASK, total, f"download {target.name}")
        try:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                progress.advance(DOWNLOAD_TASK, len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise DfxError(
                f"the download of {url} broke off after {received} bytes ({error}); "
                "nothing was kept, try again."
            ) from error
        finally:
            progress.finish(DOWNLOAD_TASK)
    if total is not None and received != total:
        raise DfxError(
            f"the download of {url} broke off after {received} of {total} bytes; "
            "nothing was kept, try again."
        )
    return digest.hexdigest()


def _verify_cached(path: Path, expected: str, source: str) -> None:
    """Check a file already in a cache; one that does not match is kept and its hash named.

    A mistyped ``sha256`` must not cost a good download: the file stays where it is, and
    the message says how to get rid of it when it is the file that is wrong.
    """
    actual = file_sha256(path)
    if actual != expected:
        raise DfxError(
            f"the cached file of {source} ({path}) has SHA-256 {actual}, but {expected} was "
            "expected; the file was left in place: check `sha256`, or delete the file to "
            "download it again."
        )


def _mismatch(source: str, actual: str, expected: str) -> str:
    return (
        f"the file of {source} has SHA-256 {actual}, but {expected} was expected; "
        "the download was deleted."
    )


# --- hf:// ----------------------------------------------------------------------------


def _from_hub(reference: ModelReference, progress: ProgressReporter) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise MissingExtra("hub") from None
    cache = os.environ.get("HF_HUB_CACHE") or None  # read now, not when the package loaded
    endpoint = os.environ.get("HF_ENDPOINT") or None
    options = {
        "repo_id": reference.repo_id,
        "filename": reference.filename,
        "revision": reference.revision,
        "cache_dir": cache,
        "endpoint": endpoint,
        "library_name": "dfx",
        "library_version": __version__,
    }
    if "tqdm_class" in inspect.signature(huggingface_hub.hf_hub_download).parameters:
        options["tqdm_class"] = _forwarding_tqdm(progress, reference.filename)
    where = cache or constants.HF_HUB_CACHE
    try:
        with _hub_logs_silenced():
            options["local_files_only"] = is_offline() or not _hub_answers(reference, endpoint)
            path = Path(huggingface_hub.hf_hub_download(**options))
    except errors.LocalEntryNotFoundError:
        raise DfxError(
            f"{reference.text} is not in the Hugging Face cache folder {where} and cannot be "
            "downloaded now (offline, or no connection)."
        ) from None
    except (errors.GatedRepoError, errors.RepositoryNotFoundError):
        raise DfxError(
            f"cannot download {reference.text}: the Hub has no repository {reference.repo_id} "
            "you may read (for a private or gated one, log in with `hf auth login`)."
        ) from None
    except errors.RevisionNotFoundError:
        raise DfxError(
            f"the Hub repository {reference.repo_id} has no revision {reference.revision}."
        ) from None
    except errors.EntryNotFoundError:
        raise DfxError(
            f"the Hub repository {reference.repo_id} has no file {reference.filename}"
            f"{f' at {reference.revision}' if reference.revision else ''}."
        ) from None
    except (errors.HfHubHTTPError, OSError, ValueError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DfxError(f"cannot download {reference.text}: {detail.rstrip('.')}.") from error
    if reference.sha256 is not None:  # the Hub's cache checks its own files: kept either way
        _verify_cached(path, reference.sha256, reference.text)
    return path


_HUB_PROBE_TIMEOUT_S = 10


def _hub_answers(reference: ModelReference, endpoint: str | None) -> bool:
    """Whether the Hub answers one request for the file's metadata, with no retries.

    huggingface_hub retries a Hub it cannot reach for about 23 s before it falls back to
    its cache; one failed request is enough for dfx to go to the cache at once.
    """
    import huggingface_hub
    from huggingface_hub import errors

    url = huggingface_hub.hf_hub_url(
        reference.repo_id, reference.filename, revision=reference.revision, endpoint=endpoint
    )
    try:
        huggingface_hub.get_hf_file_metadata(url, timeout=_HUB_PROBE_TIMEOUT_S)
    except errors.HfHubHTTPError:  # it answered (no such file, no access): the download says
        return True
    except Exception:  # noqa: BLE001 - no answer at all (DNS, refused, timeout, TLS): cache only
        return False
    return True


@contextlib.contextmanager
def _hub_logs_silenced():
    """huggingface_hub's own log lines (retries, timeouts) held back: dfx says what failed."""
    import logging

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _forwarding_tqdm(progress: ProgressReporter, name: str):
    """A tqdm class for huggingface_hub that draws nothing and tells ``progress`` instead."""
    from tqdm.auto import tqdm

    class Forwarding(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            progress.start(DOWNLOAD_TASK, kwargs.get("total"), f"download {name}")

        def update(self, n=1):
            if n:
                progress.advance(DOWNLOAD_TASK, int(n))

        def close(self):
            progress.finish(DOWNLOAD_TASK)
            super().close()

    return Forwarding
