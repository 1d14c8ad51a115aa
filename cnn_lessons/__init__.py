"""cnn_lessons: convolutional neural networks from scratch in NumPy, one module per chapter.

The layers follow one small protocol (see :mod:`cnn_lessons.layer`); :mod:`checks` proves
each of them right with finite differences and an overfit test.
"""

from .activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2D, Conv2DNaive
from .dense import Dense
from .fast import (FastAdam, FastBatchNorm, FastConv2D, FastFlatten, FastMaxPool2D,
                   FastSGD)
from .flatten import Flatten
from .layer import Layer
from .losses import BCEWithLogits, MSELoss, SoftmaxCrossEntropy
from .model import Sequential
from .optimizers import SGD, Adam
from .pooling import AvgPool2D, MaxPool2D, MaxPool2DNaive
from .regularization import BatchNorm, Dropout

__version__ = "0.1.0"

__all__ = [
    "Layer", "Dense", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Conv2D", "Conv2DNaive",
    "MaxPool2D", "MaxPool2DNaive", "AvgPool2D", "Flatten", "Dropout", "BatchNorm",
    "SoftmaxCrossEntropy", "BCEWithLogits", "MSELoss", "SGD", "Adam", "Sequential",
    "FastConv2D", "FastMaxPool2D", "FastBatchNorm", "FastFlatten", "FastSGD", "FastAdam",
]
