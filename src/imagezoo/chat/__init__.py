"""Bilingual (English / Spanish) question answering about brain tumours, brain MRI and our brain models.

    from imagezoo.chat import default_chat
    default_chat().answer("¿Qué es un meningioma?").text

Answers are knowledge-base passages with their sources; the optional generation mode
(``Chat(generator=Generator.from_pretrained())``) shows a rewrite only when it is grounded in them.
"""

from imagezoo.chat.answer import Answer, Chat, default_chat
from imagezoo.chat.corpus import ModelFacts, Passage, load_passages
from imagezoo.chat.language import detect_language

__all__ = ["Answer", "Chat", "ModelFacts", "Passage", "default_chat", "detect_language", "load_passages"]
