"""Brain MRI: a gate that refuses anything but brain MRI slices, tumour type with Grad-CAM, and a
bilingual (English / Spanish) chat about these tumours that knows your last analysis.

Models are ``$IMAGEZOO_MODEL`` (type) and ``$IMAGEZOO_GATE`` (folders or Hub ids), defaulting to
``models/brain-tumor-type`` and ``models/brain-mri-gate`` when trained here, else the Hub repos.
``IMAGEZOO_CHAT_GENERATE=1`` turns on the chat's generation mode (off by default: README, "The chat").
Gradio wiring only: the analysis is :mod:`imagezoo.brain_mri`, the chat :mod:`imagezoo.chat`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr

from imagezoo.brain_mri import analyse, load_pipeline, served_facts
from imagezoo.caching import load_once
from imagezoo.chat import Chat
from imagezoo.chat.answer import percent, top_two
from imagezoo.chat.generate import Generator
from imagezoo.explain import OVERLAY_MAX_SIDE, grad_cam, overlay
from imagezoo.ui import SPACE_DELETE_CACHE, image_upload, open_upload, show_on_upload

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
MODELS_DIR = HERE.parents[1] / "models"
NOTICE = (
    "**Research and teaching demo: never a diagnosis.** These models saw public Kaggle MRI slices, not your "
    "history or your whole study, and can be wrong with high confidence. Only a doctor who reviews the complete "
    "study can tell what a scan shows. / **Demo de investigación y docencia: nunca un diagnóstico.**"
)


@load_once
def pipeline():
    return load_pipeline(str(MODELS_DIR))


@load_once
def chat() -> Chat:
    """The chat, quoting the numbers of the models this Space serves; when the generation mode cannot load
    its model, the chat answers with the passages themselves rather than not at all."""
    generator = None
    if os.environ.get("IMAGEZOO_CHAT_GENERATE") == "1":
        try:
            generator = Generator.from_pretrained()
        except Exception as err:  # noqa: BLE001 - any failure to load leaves the retrieval chat working
            logger.warning("generation mode off: its model did not load (%s)", err)
    return Chat(facts=served_facts(pipeline()), generator=generator)


def analyse_upload(image):
    """Gate verdict, tumour probability, type probabilities, Grad-CAM overlay and the chat's scan context."""
    picture = open_upload(image, "an MRI slice")
    result = analyse(pipeline(), picture)
    if not result.accepted:
        verdict = (f"### Refused: this does not look like a brain MRI slice\nThe gate's probability that it is one: "
                   f"{result.gate_score:.3f}. No tumour output is shown for images that are not brain MRI slices.")
        return verdict, None, None, None, result.as_context()
    heat, _ = grad_cam(pipeline().classifier, picture, result.label, max_side=OVERLAY_MAX_SIDE)
    verdict = f"### Brain MRI slice (gate probability {result.gate_score:.3f})\n"
    if result.decisive:
        verdict += f"Most likely class: **{result.label}** ({percent(result.probability)})."
    else:
        (first, p_first), (second, p_second) = top_two(result.probabilities)
        verdict += (f"**Not decisive**: the two most likely classes, {first} ({percent(p_first)}) and {second} "
                    f"({percent(p_second)}), are within {pipeline().classifier.decisive_margin:.0%} of each other; "
                    "the model cannot tell them apart on this slice.")
    tumour = {"tumour": result.tumour_probability, "no tumour": 1 - result.tumour_probability}
    # no class as the headline of a slice that is not decisive, as the chat names none
    types = gr.Label(result.probabilities, show_heading=result.decisive)
    return verdict, tumour, types, overlay(picture, heat), result.as_context()


#: the analysis tab's outputs before a picture is analysed: no verdict, no "last scan" for the chat
NO_ANALYSIS = ("", None, None, None, None)


def user_questions(history: list) -> list[str]:
    """The user's earlier messages, oldest first: Gradio gives each as a string or as a list of text parts."""
    questions = []
    for message in history:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        if isinstance(content, str) and content.strip():
            questions.append(content)
    return questions


def respond(message: str, history: list, scan: dict | None) -> str:
    """The chat's answer in the question's language, with its sources; a follow-up question ("How is it
    treated?") is read with the user's earlier ones."""
    answer = chat().answer(message, scan, user_questions(history))
    if not answer.sources:
        return answer.text
    label = "Fuentes" if answer.language == "es" else "Sources"
    sources = "\n".join(f"- [{s['title']}]({s['url']}) ({s['source']})" for s in answer.sources)
    return f"{answer.text}\n\n**{label}:**\n{sources}"


def build_demo() -> gr.Blocks:
    examples = sorted(str(p) for p in (HERE / "examples").glob("*.jpg"))
    with gr.Blocks(title="Brain MRI: tumour type, heat-maps and a chat", delete_cache=SPACE_DELETE_CACHE) as demo:
        gr.Markdown("# Brain MRI: tumour type, heat-maps and a bilingual chat")
        gr.Markdown(NOTICE, elem_id="notice")
        scan = gr.State(None)
        with gr.Tab("Analysis"):
            with gr.Row():
                picture = image_upload(label="MRI slice")
                with gr.Column():
                    verdict = gr.Markdown(elem_id="verdict")
                    tumour = gr.Label(label="Tumour (1 - p(no tumour))")
                    types = gr.Label(num_top_classes=4, label="Type")
            cam = gr.Image(label="Grad-CAM: where the evidence for the most likely class lies (last stage)")
            show_on_upload(picture, analyse_upload, [verdict, tumour, types, cam, scan], NO_ANALYSIS, api_name="analyse")
            if examples:
                gr.Examples(examples, picture, label="Test-split examples (one per class)")
        with gr.Tab("Chat / Conversación"):
            gr.ChatInterface(
                respond,
                additional_inputs=[scan],
                description=("Answers come from a curated knowledge base with its public sources (NCI, Mayo Clinic, "
                             "NHS, MedlinePlus...), in English or Spanish: \"What is a meningioma?\", \"¿Cómo se trata "
                             "un glioma?\". Ask about your last analysis with \"what does my result mean?\" / \"¿qué "
                             "significa mi resultado?\". Not medical advice."),
                api_name="chat",
            )
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch()
