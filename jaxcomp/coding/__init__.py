"""Host-side entropy coding (constriction) and the bitstream container."""

from jaxcomp.coding.container import (
    MAX_PAYLOADS,
    BitstreamError,
    ChecksumError,
    ModelMismatchError,
    TruncatedError,
    UnsupportedError,
    fingerprint,
    pack,
    peek,
    unpack,
)
from jaxcomp.coding.entropy_coder import (
    CategoricalStreamDecoder,
    CodingError,
    decode_categorical,
    decode_uniform,
    decode_windowed,
    encode_categorical,
    encode_categorical_parts,
    encode_uniform,
    encode_windowed,
    ideal_bits,
    ideal_bits_windowed,
    information_content,
)

__all__ = [
    "MAX_PAYLOADS", "BitstreamError", "CategoricalStreamDecoder", "ChecksumError", "CodingError", "ModelMismatchError",
    "TruncatedError", "UnsupportedError", "decode_categorical", "decode_uniform", "decode_windowed",
    "encode_categorical", "encode_categorical_parts", "encode_uniform", "encode_windowed", "fingerprint",
    "ideal_bits", "ideal_bits_windowed", "information_content", "pack", "peek", "unpack",
]
