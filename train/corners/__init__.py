"""Card corner model (YOLO12n-pose, Ultralytics): data conversion, augmentation, metrics, trainer.

The scripts that use it live one level up: train_corners.py, train_corner_refiner.py,
evaluate_corners.py, export_corners.py and preview_corner_augmentations.py.
"""
