"""Minimal CRI ``runtime.v1.ImageService`` client: what kubelet does to pull images.

Talks to a containerd's CRI plugin over its gRPC socket with grpcio *generic* unary calls; the
few protobuf messages involved are encoded and decoded by hand below (no generated code, no
proto file). Field numbers are those of kubernetes ``cri-api`` ``pkg/apis/runtime/v1/api.proto``::

    ImageSpec            { string image = 1; map<string,string> annotations = 2; ... }
    Image                { string id = 1; repeated string repo_tags = 2;
                           repeated string repo_digests = 3; uint64 size = 4; ... }
    ListImagesRequest    { ImageFilter filter = 1; }
    ListImagesResponse   { repeated Image images = 1; }
    ImageStatusRequest   { ImageSpec image = 1; bool verbose = 2; }
    ImageStatusResponse  { Image image = 1; map<string,string> info = 2; }
    PullImageRequest     { ImageSpec image = 1; AuthConfig auth = 2;
                           PodSandboxConfig sandbox_config = 3; }
    PullImageResponse    { string image_ref = 1; }
    RemoveImageRequest   { ImageSpec image = 1; }
    RemoveImageResponse  {}

Works against containerd 1.6, 1.7 (``io.containerd.grpc.v1.cri``) and 2.x (same gRPC service,
backed by ``io.containerd.cri.v1.images``). CRI keeps its images in namespace ``k8s.io``.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

SERVICE = "/runtime.v1.ImageService/"

# -- protobuf wire format (just what these messages need) --------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_fields(data: bytes) -> dict[int, list[Any]]:
    """``{field number: [values]}``: ints for varint/fixed fields, bytes for length-delimited."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == _I64:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == _I32:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def image_spec(ref: str) -> bytes:
    """``ImageSpec{image: ref}``."""
    return _field_bytes(1, ref.encode())


def decode_image(data: bytes) -> dict[str, Any]:
    """``Image`` -> ``{"id", "repo_tags", "repo_digests", "size", "pinned"}``."""
    f = decode_fields(data)
    return {
        "id": f.get(1, [b""])[0].decode(),
        "repo_tags": [v.decode() for v in f.get(2, [])],
        "repo_digests": [v.decode() for v in f.get(3, [])],
        "size": f.get(4, [0])[0],
        "pinned": bool(f.get(8, [0])[0]),
    }


# -- client ------------------------------------------------------------------------------------


class CRIError(RuntimeError):
    """A CRI call failed (message carries the gRPC status code and details)."""

    def __init__(self, method: str, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"CRI {method}: {code.name if code else '?'}: {details}")
        self.method = method
        self.code = code
        self.details = details


class ImageServiceClient:
    """``runtime.v1.ImageService`` on ``address`` (a unix socket path, e.g. the daemon's)."""

    def __init__(self, address: str, *, timeout: float = 120.0) -> None:
        target = address if "://" in address else f"unix://{address}"
        self._channel = grpc.insecure_channel(target)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ImageServiceClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        call = self._channel.unary_unary(SERVICE + method)
        try:
            return call(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise CRIError(method, exc.code(), exc.details() or "") from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Retry ``ListImages`` until the CRI plugin answers (it initialises after start)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("ListImages", b"", timeout=5)
                return
            except CRIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def pull_image(self, ref: str) -> str:
        """``PullImage``; returns ``image_ref`` (the image ID, ``sha256:<config digest>``)."""
        reply = decode_fields(self._call("PullImage", _field_bytes(1, image_spec(ref))))
        return reply.get(1, [b""])[0].decode()

    def image_status(self, ref: str) -> dict[str, Any] | None:
        """``ImageStatus`` of a tag, ``repo@digest`` or ID; None when CRI does not know it."""
        reply = decode_fields(self._call("ImageStatus", _field_bytes(1, image_spec(ref))))
        if 1 not in reply:
            return None
        return decode_image(reply[1][0])

    def list_images(self) -> list[dict[str, Any]]:
        """``ListImages`` without a filter."""
        reply = decode_fields(self._call("ListImages", b""))
        return [decode_image(raw) for raw in reply.get(1, [])]

    def remove_image(self, ref: str) -> None:
        """``RemoveImage`` (every name of the image goes; absent images are not an error)."""
        self._call("RemoveImage", _field_bytes(1, image_spec(ref)))
