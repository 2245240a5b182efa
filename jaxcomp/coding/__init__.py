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
    decode_windowed,
    encode_categorical,
    encode_uniform,
    encode_windowed,
    ideal_bits,
    ideal_bits_windowed,
)

__all__ = [
    "BitstreamError", "ChecksumError", "CodingError", "ModelMismatchError", "TruncatedError", "UnsupportedError",
    "decode_categorical", "decode_uniform", "decode_windowed", "encode_categorical", "encode_uniform",
    "encode_windowed", "fingerprint", "ideal_bits", "ideal_bits_windowed",
    "pack", "unpack",
]
