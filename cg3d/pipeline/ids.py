"""Object ids: stable, unique within a data set, safe as a WebDataset `__key__`."""

import hashlib
import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def object_id(source: str, relpath: str, max_slug: int = 60) -> str:
    """A readable slug of `relpath` plus a short hash of (source, relpath).

    No dots (WebDataset cuts keys at the first dot) and no slashes; the hash keeps ids
    unique when two paths slug alike (spaces, non-ASCII names, long paths).
    """
    rel = relpath.replace("\\", "/")
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("_", ascii_stem).strip("_")[-max_slug:].strip("_") or "object"
    # surrogateescape: a file name that is not UTF-8 (os gives its bytes as surrogates) still
    # has an id, distinct from every other name's (its row says the name is unusable)
    digest = hashlib.sha1(f"{source}\0{rel}".encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{source}-{slug}-{digest}"
