"""Host-side entropy coding (constriction) and the bitstream container."""

from jaxcomp.coding.container import (
    BitstreamError,
    ChecksumError,
    ModelMismatchError,
    TruncatedError,
    UnsupportedError,
    fingerprint,
    pack,
    unpack,
)
from jaxcomp.coding.entropy_coder import (
    CodingError,
    decode_categorical,
    decode_uniform,
    encode_categorical,
    encode_uniform,
    ideal_bits,
)

__all__ = [
    "BitstreamError", "ChecksumError", "CodingError", "ModelMismatchError", "TruncatedError", "UnsupportedError",
    "decode_categorical", "decode_uniform", "encode_categorical", "encode_uniform", "fingerprint", "ideal_bits",
    "pack", "unpack",
]
