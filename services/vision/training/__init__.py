"""Pill detector training: a synthetic dataset generator and the YOLO11n fine-tuning command."""
