"""News sentiment: a transformers model the project fine-tunes itself, news sources, the
aggregate, and `SentimentMLStrategy` (hybrid signals by the rule in `signals`)."""

from sentiment.model import SentimentAnalyzer, SentimentModelError
from sentiment.news import NewsInputError, NewsSourceError
from sentiment.strategy import SentimentMLStrategy
from signals import HybridWeights, combine_signal

__all__ = [
    "HybridWeights",
    "NewsInputError",
    "NewsSourceError",
    "SentimentAnalyzer",
    "SentimentMLStrategy",
    "SentimentModelError",
    "combine_signal",
]
