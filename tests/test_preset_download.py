"""Presets downloaded by name or handle, with only the network faked.

`TransferClassifier.from_preset("resnet_50_imagenet")` runs keras-hub's
registry (name to `kaggle://` handle), kagglehub's resolver and cache and
requests; `from_preset("hf://...")` runs huggingface_hub's `hf_hub_download`
and its cache. The fakes replace only the last step before a socket:
urllib3's `HTTPConnectionPool.urlopen` under requests (kagglehub) and
httpx2's `HTTPTransport.handle_request` (huggingface_hub). They answer as the
real servers do: Kaggle's model API redirects to a signed storage URL that
serves the bytes with an MD5 `x-goog-hash`; the Hub answers `HEAD` with
commit and ETag headers and redirects weights to its CDN.
"""

import base64
import hashlib
import io
import json
import pathlib
import re
import socket
import time
import urllib.parse

import httpx2
import keras
import keras_hub
import kit
import numpy as np
import pytest
import urllib3
from huggingface_hub import constants as hf_constants

from kerastl import TransferClassifier
from kerastl.models import backbones
from kerastl.models import presets
from kerastl.utils import downloads

KAGGLE_API = "api.kaggle.com"
KAGGLE_DOWNLOAD = "/v1/models.ModelApiService/DownloadModelInstanceVersion"
KAGGLE_STORAGE = "storage.googleapis.com"
HF_HUB = "huggingface.co"
HF_CDN = "cdn-lfs.hf.co"
HF_REPO = "someorg/tiny-vit"
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"

# The built-in presets under test, with the backbone class whose registry
# maps the name to a Kaggle handle and the tiny stand-in of that family.
BUILTIN = {
    "resnet_50_imagenet": (keras_hub.models.ResNetBackbone, "resnet"),
    "vit_base_patch16_224_imagenet": (keras_hub.models.ViTBackbone, "vit"),
}


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _json(config):
    # As written to `config.json`: tuples become lists.
    return json.loads(json.dumps(config))


def _files(folder):
    folder = pathlib.Path(folder)
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


class FakeKaggle:
    """Kaggle's model API and its storage bucket, serving preset folders.

    Stands in for `urllib3.HTTPConnectionPool.urlopen`, so requests,
    kagglesdk's client and kagglehub's resolver, download and cache all run.

    Args:
        models: dict. `{handle without "kaggle://": {file name: bytes}}`.
    """

    def __init__(self, models):
        self.models = models
        self.asked = []  # (handle, file) asked of the download API.
        self.served = []  # Storage URLs whose bytes were sent.

    def urlopen(self, pool, method, url, body=None, **kwargs):
        if (pool.host, method, url) == (KAGGLE_API, "POST", KAGGLE_DOWNLOAD):
            return self._download(json.loads(body))
        if pool.host == KAGGLE_STORAGE and method == "GET":
            return self._storage(url)
        return _urllib3_response(404, {}, b"")

    def _download(self, request):
        framework = request["framework"].removeprefix("MODEL_FRAMEWORK_")
        handle = "/".join(
            [
                request["ownerSlug"],
                request["modelSlug"],
                framework.lower(),
                request["instanceSlug"],
                str(request["versionNumber"]),
            ]
        )
        self.asked.append((handle, request["path"]))
        if request["path"] not in self.models.get(handle, {}):
            error = {"code": 404, "message": "Not found"}
            headers = {"Content-Type": "application/json"}
            return _urllib3_response(404, headers, json.dumps(error).encode())
        # The API answers with a signed, expiring URL on Google storage.
        location = (
            f"https://{KAGGLE_STORAGE}/kaggle-models-data/{handle}/"
            f"{request['path']}?X-Goog-Signature=fake"
        )
        return _urllib3_response(302, {"Location": location}, b"")

    def _storage(self, url):
        path = urllib.parse.urlsplit(url).path
        # The handle has five parts; the file may sit in a subfolder.
        parts = path.removeprefix("/kaggle-models-data/").split("/")
        handle, name = "/".join(parts[:5]), "/".join(parts[5:])
        data = self.models[handle][name]
        self.served.append(url)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(data)),
            "x-goog-hash": f"crc32c=AAAAAA==,md5={md5}",
        }
        return _urllib3_response(200, headers, data)


def _urllib3_response(status, headers, data):
    return urllib3.HTTPResponse(
        body=io.BytesIO(data),
        headers=headers,
        status=status,
        preload_content=False,
        decode_content=False,
    )


class FakeHub:
    """The Hugging Face Hub and its CDN, serving one repository's files.

    Stands in for `httpx2.HTTPTransport.handle_request`, so
    huggingface_hub's `hf_hub_download` (metadata, redirects, cache) runs.

    Args:
        repo: str. The repository id, `"org/name"`.
        files: dict. `{file name: bytes}` at the `main` revision.
    """

    def __init__(self, repo, files):
        self.repo = repo
        self.files = files
        self.requests = []  # (method, url) of every request.

    def handle_request(self, request):
        self.requests.append((request.method, str(request.url)))
        url = request.url
        if url.host == HF_CDN:
            name = next(
                n for n, d in self.files.items() if _sha256(d) == url.path[1:]
            )
            return self._response(request, 200, {}, self.files[name])
        prefix = f"/{self.repo}/resolve/"
        revision, _, name = url.path.removeprefix(prefix).partition("/")
        known = url.path.startswith(prefix) and revision in ("main", HF_COMMIT)
        if not known or name not in self.files:
            headers = {
                "X-Error-Code": "EntryNotFound",
                "X-Error-Message": "Entry not found",
                "X-Repo-Commit": HF_COMMIT,
            }
            return self._response(request, 404, headers, b"")
        data = self.files[name]
        headers = {"X-Repo-Commit": HF_COMMIT, "Content-Length": str(len(data))}
        if name.endswith(".safetensors"):
            # Weights live in LFS: the Hub redirects to the CDN and names
            # the blob's hash and size in X-Linked-* headers.
            headers.update(
                {
                    "Location": f"https://{HF_CDN}/{_sha256(data)}",
                    "X-Linked-Etag": f'"{_sha256(data)}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": '"lfs-pointer"',
                }
            )
            return self._response(request, 302, headers, b"")
        git_sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        headers["ETag"] = f'"{git_sha}"'
        body = b"" if request.method == "HEAD" else data
        return self._response(request, 200, headers, body)

    @staticmethod
    def _response(request, status, headers, body):
        return httpx2.Response(
            status, headers=headers, content=body, request=request
        )


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tiny_presets(tmp_path_factory):
    """Tiny presets in keras-hub's layout, and what was saved in them."""
    saved = {}
    for family in ("resnet", "vit"):
        folder = tmp_path_factory.mktemp(f"tiny_{family}")
        backbone, converter = kit.TINY_BACKBONES[family]()
        backbone.save_to_preset(str(folder))
        converter.save_to_preset(str(folder))
        saved[family] = {
            "dir": folder,
            "files": _files(folder),
            "config": backbone.get_config(),
            "weights": _numpy(backbone.weights),
            "converter": converter.get_config(),
        }
    return saved


@pytest.fixture
def kaggle_cache(tmp_path, monkeypatch):
    """kagglehub's cache in a fresh folder, and no Kaggle credentials."""
    cache = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return cache


def _serve_kaggle(monkeypatch, models):
    kaggle = FakeKaggle(models)
    monkeypatch.setattr(
        urllib3.HTTPConnectionPool,
        "urlopen",
        lambda pool, method, url, **kw: kaggle.urlopen(pool, method, url, **kw),
    )
    return kaggle


@pytest.mark.parametrize("name", list(BUILTIN), ids=["resnet", "vit"])
def test_builtin_preset_downloads_through_kagglehub(
    name, tiny_presets, kaggle_cache, monkeypatch
):
    backbone_cls, family = BUILTIN[name]
    saved = tiny_presets[family]
    # The handle keras-hub's registry maps the name to, read from the
    # backbone class rather than from the code under test.
    url = backbone_cls.presets[name]["kaggle_handle"]
    handle = url.removeprefix("kaggle://")
    kaggle = _serve_kaggle(monkeypatch, {handle: saved["files"]})

    keras.utils.set_random_seed(1)
    model = TransferClassifier.from_preset(name, num_classes=3)

    # Every file was asked for under the registry's handle, and the preset's
    # files were all fetched; `kerastl.json` was asked for and is absent.
    assert {h for h, _ in kaggle.asked} == {handle}
    asked = {path for _, path in kaggle.asked}
    assert {"config.json", "model.weights.h5", "image_converter.json"} <= asked
    assert "kerastl.json" in asked
    # kagglehub wrote them in its cache, byte for byte.
    cached = kaggle_cache / "models" / handle
    for file in ("config.json", "model.weights.h5", "image_converter.json"):
        assert (cached / file).read_bytes() == saved["files"][file]

    # The model is the tiny preset: its config, its weights, its converter.
    assert _json(model.backbone.get_config()) == _json(saved["config"])
    for ours, theirs in zip(
        _numpy(model.backbone.weights), saved["weights"], strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    converter = model.image_converter.get_config()
    for key in ("scale", "offset", "image_size", "interpolation"):
        assert converter[key] == saved["converter"][key], key

    # It predicts as the same classifier built from the folder on disk.
    images = kit.random_images(4)
    keras.utils.set_random_seed(1)
    local = TransferClassifier.from_preset(saved["dir"], num_classes=3)
    np.testing.assert_allclose(
        model.predict(images, verbose=0),
        local.predict(images, verbose=0),
        atol=1e-6,
    )

    # A second load comes from kagglehub's cache: no bytes are downloaded.
    served = len(kaggle.served)
    TransferClassifier.from_preset(name, num_classes=3)
    assert len(kaggle.served) == served


def test_missing_kaggle_file_is_not_an_offline_error(
    tiny_presets, kaggle_cache, monkeypatch
):
    # The server answers, without the backbone's config: keras-hub's own
    # "doesn't exist" error, not a network message.
    handle = keras_hub.models.ResNetBackbone.presets["resnet_50_imagenet"][
        "kaggle_handle"
    ].removeprefix("kaggle://")
    files = dict(tiny_presets["resnet"]["files"])
    del files["config.json"]
    _serve_kaggle(monkeypatch, {handle: files})
    with pytest.raises(FileNotFoundError, match="config.json") as info:
        TransferClassifier.from_preset("resnet_50_imagenet", num_classes=3)
    assert not isinstance(info.value, downloads.OfflineError)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """huggingface_hub's cache in a fresh folder, and no token."""
    cache = tmp_path / "hf-cache"
    # huggingface_hub reads its settings from the environment once, at
    # import time, into `constants`.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(
        hf_constants,
        "AGENT_HARNESSES_PATH",
        str(tmp_path / "hf-home" / ".agent_harnesses.json"),
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return cache


def test_hf_checkpoint_downloads_through_huggingface_hub(
    tmp_path, hf_cache, monkeypatch
):
    hf_model, processor = kit.write_hf_checkpoint("vit", tmp_path / "ckpt")
    files = _files(tmp_path / "ckpt")
    hub = FakeHub(HF_REPO, files)
    monkeypatch.setattr(
        httpx2.HTTPTransport,
        "handle_request",
        lambda transport, request: hub.handle_request(request),
    )

    model = TransferClassifier.from_preset(
        f"hf://{HF_REPO}", num_classes=3, pooling="token"
    )

    # Files were asked for in the repository only, and the weights came from
    # the CDN the Hub redirected to. The one other request is
    # huggingface_hub's daily fetch of its agent registry, for its
    # user-agent header; it gets a 404, as any unknown URL.
    file_urls = (f"https://{HF_HUB}/{HF_REPO}/resolve/", f"https://{HF_CDN}/")
    others = {url for _, url in hub.requests if not url.startswith(file_urls)}
    assert others <= {f"https://{HF_HUB}/api/agent-harnesses"}
    gets = {url for method, url in hub.requests if method == "GET"}
    assert f"https://{HF_CDN}/{_sha256(files['model.safetensors'])}" in gets
    # huggingface_hub stored them in its cache, under the served commit.
    snapshot = hf_cache / "models--someorg--tiny-vit" / "snapshots" / HF_COMMIT
    for file in files:
        assert (snapshot / file).read_bytes() == files[file]

    # Raw images through kerastl's preprocessing and backbone match
    # transformers' image processor and model.
    import torch

    images = kit.random_images(4)
    pixels = processor(images=list(images), return_tensors="pt")
    with torch.no_grad():
        hidden = hf_model(**pixels).last_hidden_state.numpy()
    converted = keras.ops.convert_to_numpy(model.image_converter(images))
    np.testing.assert_allclose(
        converted,
        np.transpose(pixels["pixel_values"].numpy(), (0, 2, 3, 1)),
        atol=1e-5,
    )
    key, _ = backbones.image_input(model.backbone)
    sequence = model.backbone.predict(
        {key: converted} if key else converted, verbose=0
    )
    np.testing.assert_allclose(sequence, hidden, atol=1e-4)
    features = model.feature_extractor().predict(images, verbose=0)
    np.testing.assert_allclose(features, hidden[:, 0], atol=1e-4)


def _resolve_to(monkeypatch, address):
    # DNS answers with `address`, so the connection itself is what fails.
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _check_offline_message(message, *fragments):
    assert "\n" not in message.strip()  # One paragraph.
    assert "offline" in message
    assert "`--set preset=PATH`" in message
    for fragment in fragments:
        assert fragment in message


def test_offline_builtin_preset_fails_fast(kaggle_cache, monkeypatch):
    # pytest-socket blocks every connection, as a machine without network
    # would; DNS is made to answer so that the same happens everywhere.
    _resolve_to(monkeypatch, "192.0.2.1")
    handle = keras_hub.models.ResNetBackbone.presets["resnet_50_imagenet"][
        "kaggle_handle"
    ]
    start = time.monotonic()
    with pytest.raises(downloads.OfflineError) as info:
        TransferClassifier.from_preset("resnet_50_imagenet", num_classes=3)
    assert time.monotonic() - start < 15
    _check_offline_message(
        str(info.value), "'resnet_50_imagenet'", handle, "SocketBlockedError"
    )


def _fail_dns(monkeypatch):
    # A machine without network fails at name resolution: the real requests
    # and urllib3 exceptions wrap the `gaierror`.
    def getaddrinfo(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_offline_dns_failure_through_kagglehub(kaggle_cache, monkeypatch):
    _fail_dns(monkeypatch)
    start = time.monotonic()
    with pytest.raises(downloads.OfflineError) as info:
        TransferClassifier.from_preset(
            "vit_base_patch16_224_imagenet", num_classes=3
        )
    assert time.monotonic() - start < 15
    _check_offline_message(str(info.value), "vit_base_patch16_224_imagenet")
    assert downloads.network_failure(info.value.__cause__) is not None


def test_offline_hf_preset_fails_fast(hf_cache, monkeypatch):
    _resolve_to(monkeypatch, "192.0.2.1")
    start = time.monotonic()
    with pytest.raises(downloads.OfflineError) as info:
        TransferClassifier.from_preset(f"hf://{HF_REPO}", num_classes=3)
    assert time.monotonic() - start < 15
    _check_offline_message(str(info.value), f"hf://{HF_REPO}", "Hugging Face")


LOADERS = {
    "head_config": presets.load_head_config,
    "backbone": presets.load_backbone,
    "image_converter": presets.load_image_converter,
    "input_size": presets.input_size,
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize(
    "preset", ["resnet_50_imagenet", f"hf://{HF_REPO}"], ids=["kaggle", "hf"]
)
def test_every_preset_download_says_offline(
    preset, loader, kaggle_cache, hf_cache, monkeypatch
):
    # Kaggle: name resolution fails. huggingface_hub: its offline mode
    # (`HF_HUB_OFFLINE=1`), which raises "not found in the cache" at once;
    # with DNS failing it raises the same after retrying for 23 s. Either
    # way a missing optional file must not stand for the network.
    _fail_dns(monkeypatch)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(downloads.OfflineError, match=re.escape(f"'{preset}'")):
        LOADERS[loader](preset)
