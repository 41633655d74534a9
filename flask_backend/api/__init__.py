"""HTTP layers: parse → call a service → JSON. No FAISS or ONNX in here."""
