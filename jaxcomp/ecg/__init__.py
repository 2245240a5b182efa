"""ECG rhythm classification (PhysioNet/CinC 2017): data, synthetic recordings, spectrogram front end,
CNN / CRNN (Zihlmann, Perekrestenko & Tschannen 2017), augmentation, scoring and the trainer's task."""

from jaxcomp.ecg.data import (
    CLASS_NAMES,
    CLASSES,
    FS,
    ECGBatches,
    ECGDataError,
    ECGDataset,
    build_ecg_data,
    check_recording,
    load_challenge,
    load_dataset,
    read_record,
    read_reference,
    stratified_kfold,
    write_record,
)
from jaxcomp.ecg.features import FEATURE_NAMES, detect_qrs, feature_matrix, record_features
from jaxcomp.ecg.scoring import challenge_f1, confusion_matrix, f1_per_class, score
from jaxcomp.ecg.synthetic import synthesize_dataset, synthesize_record

__all__ = [
    "CLASSES", "CLASS_NAMES", "ECGBatches", "ECGDataError", "ECGDataset", "FEATURE_NAMES", "FS", "build_ecg_data",
    "challenge_f1", "check_recording", "confusion_matrix", "detect_qrs", "f1_per_class", "feature_matrix",
    "load_challenge", "load_dataset", "read_record", "read_reference", "record_features", "score",
    "stratified_kfold", "synthesize_dataset", "synthesize_record", "write_record",
]
