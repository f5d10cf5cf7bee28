"""Download the g2pW polyphone model (G2PWModel_1.1.zip, ~600 MB) into config.yml's `text.g2pw_dir`.

The zip is not on the Hugging Face hub: it comes from PaddleSpeech's server, or from ModelScope for users
in China. `text.g2pw_url` in config.yml picks another copy (a local mirror, a file:// path); by default
ModelScope is used when a hub mirror is configured (hub.endpoint / --endpoint / HF_ENDPOINT), else
PaddleSpeech. The download resumes from its `.part` file, then the zip is unpacked and checked.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from vits.errors import KoeError, one_line_reason

SOURCES = {
    "paddle": "https://paddlespeech.bj.bcebos.com/Parakeet/released_models/g2p/G2PWModel_1.1.zip",
    "modelscope": "https://www.modelscope.cn/models/kamiorinn/g2pw/resolve/master/G2PWModel_1.1.zip",
}
_CHUNK = 1 << 20


def g2pw_url(settings) -> str:
    """config.yml text.g2pw_url, else ModelScope when a hub mirror is set, else PaddleSpeech."""
    if getattr(settings, "g2pw_url", ""):
        return settings.g2pw_url
    mirror = settings.hub_endpoint or os.environ.get("HF_ENDPOINT")
    return SOURCES["modelscope" if mirror else "paddle"]


def _fetch(url: str, part: Path, log: Callable[[str], None]) -> None:
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        resumed = done and getattr(response, "status", 200) == 206
        mode = "ab" if resumed else "wb"
        total = response.headers.get("Content-Length")
        log(f"downloading {url}" + (f" (resuming at {done} bytes)" if resumed else "")
            + (f", {int(total) // (1 << 20)} MB" if total else ""))
        with open(part, mode) as out:
            shutil.copyfileobj(response, out, _CHUNK)


def download_g2pw(settings, log: Callable[[str], None] = lambda _m: None) -> None:
    """G2PWModel_1.1.zip into settings.g2pw_dir (unpacked, checked). Raises KoeError naming the URL and fix."""
    from vits.text.zh.g2pw import CHARS_FILE, ONNX_FILE, PINYIN_FILE

    target = Path(settings.g2pw_dir)
    needed = (ONNX_FILE, CHARS_FILE, PINYIN_FILE)
    if all((target / n).is_file() for n in needed):
        log(f"{target} is already there; delete it to download g2pW again")
        return
    url = g2pw_url(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.parent / "G2PWModel_1.1.zip.part"
    fix = (f"check the connection, set text.g2pw_url in config.yml to a reachable copy ({SOURCES['modelscope']} "
           f"in China), or unpack G2PWModel_1.1.zip by hand into {target}")
    try:
        _fetch(url, part, log)
    except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors; a bad URL is a ValueError
        raise KoeError(f"could not download g2pW ({one_line_reason(exc)})", where=url, fix=fix) from None
    staging = target.parent / ".g2pw-unpack"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(part) as archive:
            archive.extractall(staging)
    except zipfile.BadZipFile:
        part.unlink()
        raise KoeError("the downloaded g2pW file is not a zip (a proxy page or a cut download)", where=url,
                       fix=f"run the download again; {fix}") from None
    found = next((p.parent for p in staging.rglob(ONNX_FILE)), None)
    if found is None or not all((found / n).is_file() for n in needed):
        shutil.rmtree(staging, ignore_errors=True)
        raise KoeError(f"the g2pW zip lacks {', '.join(needed)}", where=url, fix=fix)
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(found), str(target))
    shutil.rmtree(staging, ignore_errors=True)
    part.unlink()
    log(f"g2pW is in {target}; set text.zh_polyphones: g2pw in config.yml to use it")
