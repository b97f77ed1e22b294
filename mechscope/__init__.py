"""mechscope: did my interpretability method find the mechanisms that are really there?"""

__version__ = "0.1.0"
