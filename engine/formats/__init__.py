"""Pure (no file I/O) conversions between MedQ records and outside formats (MedQ-Bench TSV,
Q-Bench JSON) and the pixel normalization shared by every importer."""
