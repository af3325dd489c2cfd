"""What a file's bytes say it is, when that is not audio or video ("a JPEG image"),
so a wrong upload is refused in words before ffprobe is asked (shared.runtime.media)."""

from __future__ import annotations

from pathlib import Path

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"GIF87a", "a GIF image"),
    (0, b"GIF89a", "a GIF image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"PK\x05\x06", "a ZIP archive"),
    (0, b"\x1f\x8b", "a gzip archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"Rar!\x1a\x07", "a RAR archive"),
    (0, b"BZh", "a bzip2 archive"),
    (0, b"\xfd7zXZ\x00", "an XZ archive"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"\x00\x00\x01\x00", "an icon image"),
    (0, b"8BPS", "a Photoshop image"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document"),
    (0, b"{\\rtf", "a rich-text document"),
    (0, b"MZ", "a Windows program"),
    (0, b"\x7fELF", "a program"),
    (0, b"SQLite format 3\x00", "a database file"),
    (0, b"\xff\x0a", "a JPEG XL image"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image"),
)
# ISO base media brands that are still images, not video (iPhone photos are HEIC).
_IMAGE_BRANDS = {
    b"heic": "a HEIC image", b"heix": "a HEIC image", b"heim": "a HEIC image",
    b"heis": "a HEIC image", b"hevc": "a HEIC image", b"mif1": "a HEIF image",
    b"msf1": "a HEIF image", b"avif": "an AVIF image", b"avis": "an AVIF image",
}


def sniff(path: Path) -> str | None:
    """What the file's bytes say it is when that is not audio or video ("a JPEG image").

    None when the bytes look like media or are not recognised; ffprobe decides then.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return None
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _IMAGE_BRANDS.get(head[8:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[:4] == b"RIFF":
        return None  # WAVE, AVI
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if kind == "a Windows program" and len(head) < 64:
                continue
            if kind == "a ZIP archive":
                return _zip_kind(head)
            return kind
    if head[:2] == b"BM" and len(head) >= 26 and int.from_bytes(head[2:6], "little") in (
        0, path.stat().st_size
    ):
        return "a BMP image"
    return _text_kind(head)


def _zip_kind(head: bytes) -> str:
    if b"word/" in head:
        return "a Word document"
    if b"xl/" in head:
        return "an Excel spreadsheet"
    if b"ppt/" in head:
        return "a PowerPoint presentation"
    if b"mimetypeapplication/vnd.oasis" in head:
        return "an OpenDocument file"
    return "a ZIP archive"


def _text_kind(head: bytes) -> str | None:
    if b"\x00" in head[:1024] and not (head[:2] in (b"\xff\xfe", b"\xfe\xff")):
        return None
    text = None
    for encoding in ("utf-8", "utf-16"):
        try:
            text = head.decode(encoding)
            break
        except UnicodeDecodeError as exc:
            if encoding == "utf-8" and exc.start >= len(head) - 3:  # a character cut at 4 KB
                text = head[: exc.start].decode("utf-8")
                break
    if text is None:
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    if not text or printable < 0.97 * len(text):
        return None
    lowered = text.lstrip("\ufeff \r\n\t").lower()
    if lowered.startswith(("<!doctype html", "<html")):
        return "a web page (HTML)"
    if lowered.startswith("<?xml") or lowered.startswith("<svg"):
        return "an SVG image" if "<svg" in lowered else "an XML document"
    if lowered.startswith(("{", "[")):
        return "JSON text"
    return "plain text"


def looks_like_iso_media(path: Path) -> bool:
    """The file starts with ISO base media boxes (MP4, MOV, M4A), so it was meant as one."""
    with open(path, "rb") as f:
        head = f.read(16)
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"mdat", b"moov", b"free", b"wide", b"skip")
