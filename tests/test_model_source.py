"""Models by reference: https/http URLs from a real local server, and the Hub's cache offline."""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import ssl
import sys
import threading
from pathlib import Path

import pytest

from dfx.model_source import DOWNLOAD_TASK, model_cache_dir, resolve_model
from tests.helpers import assert_user_error, invoke
from tests.test_model_files import some_image

WRONG_SHA256 = "0" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class ModelServer:
    """Serves fixed bytes per path on 127.0.0.1 from a daemon thread and counts requests.

    A path in ``cut`` announces its full length but sends only half, then hangs up.
    """

    def __init__(self, files: dict[str, bytes], cut: tuple[str, ...] = ()) -> None:
        self.files, self.cut, self.requests = files, cut, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.cut else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def offline_env(tmp_path, monkeypatch) -> Path:
    """A private DFX_HOME and Hugging Face cache; downloads allowed unless a test says not."""
    monkeypatch.setenv("DFX_HOME", str(tmp_path / "dfx-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("DFX_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture
def served(trained, offline_env):
    """The trained detector, a non-model file and a cut-off copy, each on the local server."""
    model = Path(trained["model"]).read_bytes()
    server = ModelServer(
        {"/det/model.pt": model, "/det/notes.pt": b"not a model " * 64, "/det/cut.pt": model},
        cut=("/det/cut.pt",),
    )
    yield server, model, hashlib.sha256(model).hexdigest()
    server.stop()


def cached_files() -> list[Path]:
    return [p for p in model_cache_dir().rglob("*") if p.is_file()]


def predict(trained, model: str, *options: str):
    return invoke("predict", "--model", model, some_image(trained), "--device", "cpu", *options)


def test_first_use_downloads_and_the_second_makes_no_request(trained, served):
    server, model, sha256 = served
    url = server.url("/det/model.pt") + f"#sha256={sha256}"
    first = predict(trained, url, "--json")
    assert first.exit_code == 0, first.output
    assert server.requests == ["/det/model.pt"]
    [kept] = cached_files()
    assert kept.read_bytes() == model and kept.name == "model.pt"
    second = predict(trained, url, "--json")
    assert second.exit_code == 0, second.output
    assert server.requests == ["/det/model.pt"]  # no second request
    assert second.stdout == first.stdout


def test_sha256_option_and_dfx_model_variable(trained, served):
    server, _, sha256 = served
    env = {"DFX_MODEL": server.url("/det/model.pt")}
    result = invoke("predict", some_image(trained), "--sha256", sha256, "--json", env=env)
    assert result.exit_code == 0, result.output
    assert len(cached_files()) == 1


def test_wrong_sha256_exits_2_naming_both_hashes_and_keeps_nothing(trained, served):
    server, _, sha256 = served
    result = predict(trained, server.url("/det/model.pt"), "--sha256", WRONG_SHA256)
    assert_user_error(result, sha256, WRONG_SHA256, "deleted")
    assert cached_files() == []


def test_a_cached_file_that_no_longer_matches_is_kept_and_its_hash_named(trained, served):
    server, _, sha256 = served
    url = server.url("/det/model.pt")
    assert predict(trained, url, "--sha256", sha256).exit_code == 0
    [kept] = cached_files()
    kept.write_bytes(kept.read_bytes()[:-1] + b"!")  # damaged on disk
    damaged = hashlib.sha256(kept.read_bytes()).hexdigest()
    result = predict(trained, url, "--sha256", sha256)
    assert_user_error(result, f"has SHA-256 {damaged}", sha256, "left in place", str(kept))
    assert cached_files() == [kept]  # the user decides: delete it to download it again


def test_a_mistyped_sha256_keeps_a_good_cached_download(trained, served):
    server, model, sha256 = served
    url = server.url("/det/model.pt")
    assert predict(trained, url, "--sha256", sha256).exit_code == 0
    result = predict(trained, url, "--sha256", WRONG_SHA256)
    assert_user_error(result, f"has SHA-256 {sha256}", WRONG_SHA256, "left in place")
    [kept] = cached_files()
    assert kept.read_bytes() == model
    assert predict(trained, url, "--sha256", sha256).exit_code == 0
    assert server.requests == ["/det/model.pt"]  # downloaded once, never again


def test_a_download_cut_midway_leaves_no_file(trained, served):
    server, model, sha256 = served
    result = predict(trained, server.url("/det/cut.pt"), "--sha256", sha256)
    assert_user_error(result, "broke off", f"{len(model) // 2} of {len(model)} bytes")
    assert cached_files() == []


def test_a_downloaded_file_that_is_no_model_is_refused_as_usual(trained, served):
    server, *_ = served
    notes = server.files["/det/notes.pt"]
    url = server.url("/det/notes.pt") + f"#sha256={hashlib.sha256(notes).hexdigest()}"
    assert_user_error(predict(trained, url), "loads safely")


def test_plain_http_needs_a_sha256(trained, served):
    server, *_ = served
    assert_user_error(predict(trained, server.url("/det/model.pt")), "plain-http", "--sha256")
    assert server.requests == []


def test_server_errors_and_bad_references_are_one_sentence(trained, served):
    server, _, sha256 = served
    assert_user_error(predict(trained, server.url("/det/gone.pt"), "--sha256", sha256), "404")
    assert_user_error(predict(trained, "ftp://example.org/m.pt"), "unknown scheme")
    assert_user_error(predict(trained, "model.pt", "--sha256", "abc"), "64 hexadecimal")
    url = server.url("/det/model.pt") + f"#sha256={sha256}"
    assert_user_error(predict(trained, url, "--sha256", WRONG_SHA256), "differs")
    assert_user_error(predict(trained, "hf://only-a-repo/model.pt"), "hf://ORG/REPO")
    local = predict(trained, str(trained["model"]), "--sha256", WRONG_SHA256)
    assert_user_error(local, sha256, WRONG_SHA256)
    assert Path(trained["model"]).is_file()  # a local file is never deleted


def test_offline_uses_the_cache_and_names_url_and_folder_when_missing(trained, served, monkeypatch):
    server, _, sha256 = served
    url = server.url("/det/model.pt") + f"#sha256={sha256}"
    monkeypatch.setenv("DFX_OFFLINE", "1")
    assert_user_error(predict(trained, url), server.url("/det/model.pt"), str(model_cache_dir()))
    assert server.requests == []
    monkeypatch.delenv("DFX_OFFLINE")
    assert predict(trained, url).exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = predict(trained, url)
    assert result.exit_code == 0, result.output
    assert server.requests == ["/det/model.pt"]


def test_library_reports_download_progress_in_bytes(served):
    server, model, sha256 = served

    class Recorder:
        def __init__(self):
            self.calls = []

        def start(self, task, total, description):
            self.calls.append(("start", task, total))

        def advance(self, task, steps=1, **fields):
            self.calls.append(("advance", task, steps))

        def finish(self, task):
            self.calls.append(("finish", task))

        def notice(self, message):
            self.calls.append(("notice", message))

    recorder = Recorder()
    path = resolve_model(server.url("/det/model.pt"), sha256, progress=recorder)
    assert path.read_bytes() == model
    assert recorder.calls[0] == ("start", DOWNLOAD_TASK, len(model))
    assert sum(c[2] for c in recorder.calls if c[0] == "advance") == len(model)
    assert recorder.calls[-1] == ("finish", DOWNLOAD_TASK)


def hub_cache(root: Path, repo: str, files: dict[str, bytes], ref: str = "main") -> Path:
    """A Hugging Face cache holding ``files`` of model repository ``repo`` at one commit."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(COMMIT)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    return folder


def test_hub_reference_offline_from_the_cache(trained, offline_env, monkeypatch):
    import huggingface_hub  # noqa: F401  (the hub extra, which the test extra brings)

    model = Path(trained["model"]).read_bytes()
    sha256 = hashlib.sha256(model).hexdigest()
    folder = hub_cache(offline_env / "hf", "lab/dfx-demo", {"model.pt": model})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for reference in ("hf://lab/dfx-demo/model.pt", f"hf://lab/dfx-demo@{COMMIT}/model.pt"):
        result = predict(trained, reference, "--sha256", sha256, "--json")
        assert result.exit_code == 0, result.output
    assert_user_error(
        predict(trained, "hf://lab/dfx-demo/other.pt"), "not in the Hugging Face cache", "hf"
    )
    result = predict(trained, "hf://lab/dfx-demo/model.pt", "--sha256", WRONG_SHA256)
    assert_user_error(result, f"has SHA-256 {sha256}", WRONG_SHA256, "left in place")
    assert (folder / "snapshots" / COMMIT / "model.pt").read_bytes() == model  # kept
    monkeypatch.delenv("HF_HUB_CACHE")  # the default cache is named, and never written
    from huggingface_hub import constants

    missing = predict(trained, "hf://lab/dfx-absent/model.pt")
    assert_user_error(missing, constants.HF_HUB_CACHE)


def test_hub_reference_without_the_extra_names_it(trained, offline_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if absent
    result = predict(trained, "hf://lab/dfx-demo/model.pt")
    assert_user_error(result, 'pip install "deepfeaturex[hub]"')


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (cryptography, which the c2pa extra
    brings): the certificate file and the key file."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_an_https_reference_needs_no_sha256_and_a_trusted_certificate(
    trained, served, tmp_path, monkeypatch
):
    server, model, sha256 = served
    cert_file, key_file = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    url = server.url("/det/model.pt").replace("http://", "https://")
    untrusted = predict(trained, url, "--json")  # the system's CAs do not know the certificate
    assert_user_error(untrusted, f"cannot download {url}", "CERTIFICATE_VERIFY_FAILED")
    assert cached_files() == []
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # now trusted, as a private CA would be
    trusted = predict(trained, url, "--json")
    assert trusted.exit_code == 0, trusted.output
    assert f"downloaded {url} (sha256 {sha256})" in " ".join(trusted.stderr.split())
    [kept] = cached_files()
    assert kept.read_bytes() == model and server.requests.count("/det/model.pt") == 1


def test_downloads_are_kept_under_the_home_cache_without_dfx_home(trained, served, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    server, model, sha256 = served
    monkeypatch.delenv("DFX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = predict(trained, server.url("/det/model.pt"), "--sha256", sha256, "--json")
    assert result.exit_code == 0, result.output
    default = tmp_path / "home" / ".cache" / "dfx" / "models"  # ~/.cache/dfx/models
    [kept] = (p for p in default.rglob("*") if p.is_file())
    assert kept.read_bytes() == model
