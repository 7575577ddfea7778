"""The image table: which local binary or script an image name runs."""

import fnmatch
import json
import os
import re

from config import HERE, PYTHON


def load_image_table():
    env = dict(os.environ)
    env.setdefault("RAFTKV_BIN_DIR", default_bin_dir())
    env["KUBELET_DIR"] = HERE
    env["PYTHON"] = PYTHON
    table = {}
    files = [os.path.join(HERE, "images.json")]
    if os.environ.get("RAFTKV_IMAGES"):
        files.append(os.environ["RAFTKV_IMAGES"])
    for fn in files:
        with open(fn) as f:
            raw = json.load(f)
        for k, v in raw.items():
            if k.startswith("_"):
                continue
            table[k] = json.loads(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), json.dumps(v)))
    return table, env["RAFTKV_BIN_DIR"]


def default_bin_dir():
    if os.environ.get("RAFTKV_BIN_DIR"):
        return os.environ["RAFTKV_BIN_DIR"]
    if os.environ.get("CARGO_TARGET_DIR"):
        return os.path.join(os.environ["CARGO_TARGET_DIR"], "debug")
    return os.path.expanduser("~/.cache/raftkv/target/debug")


def image_repo(image):
    """'docker.io/raftkv/kvnode:0.1.0@sha256:..' -> 'docker.io/raftkv/kvnode'"""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)
    if ":" in last[-1]:
        image = image[: image.rindex(":")]
    return image


def lookup_image(table, image):
    repo = image_repo(image)
    for k in sorted(table, key=len, reverse=True):
        if repo == k or repo.endswith("/" + k) or fnmatch.fnmatch(repo, k):
            return table[k]
    return None
