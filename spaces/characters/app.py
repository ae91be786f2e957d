"""Which character is it, and what did the network look at? A Gradio Space for three sets.

Pick a set (Pokémon, Dragon Ball, Fairy Tail), upload a picture: the top classes with their
probabilities, a Grad-CAM heat-map of the predicted class (or any class you pick) over the
picture, and the feature maps of the layer you pick, shallow (edges, colours) to deep (parts).
Models are ``$IMAGEZOO_MODEL_<SET>`` (e.g. ``IMAGEZOO_MODEL_POKEMON``; a Hub id or a folder),
defaulting to ``models/characters-<set>`` when trained here and to the Hub repo otherwise.
The artwork is copyrighted, so this Space ships no example pictures: examples appear only when
it runs beside ``../shared/data/characters`` (the sets' unlabelled ``predict/`` folders).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from imagezoo.caching import load_once
from imagezoo.explain import OVERLAY_MAX_SIDE, feature_layers, feature_maps, grad_cam, overlay
from imagezoo.inference import ImageClassifier
from imagezoo.predictors import load_predictor
from imagezoo.tasks import CHARACTER_SETS, CHARACTER_TITLES, default_model_id
from imagezoo.ui import SPACE_DELETE_CACHE, image_upload, open_upload

HERE = Path(__file__).resolve().parent
MODELS = {name: default_model_id(f"characters-{name}", HERE.parents[1] / "models", env=f"IMAGEZOO_MODEL_{name.upper()}")
          for name in CHARACTER_SETS}
LOCAL_EXAMPLES = HERE.parents[2] / "shared" / "data" / "characters"
PREDICTED = "predicted class"
#: the feature stages of the EfficientNet-Lite the characters are fine-tuned from (timm's ``feature_info``),
#: shallow to deep; a model with other stages shows its deepest
LAYERS, DEFAULT_LAYER = ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"), "blocks.2"


@load_once
def classifier(set_name: str) -> ImageClassifier:
    return load_predictor(MODELS[set_name], runtime="torch")  # Grad-CAM needs gradients


def explain(set_name: str, image, target: str, layer: str):
    """Probabilities, Grad-CAM overlay and feature maps for one picture."""
    picture = open_upload(image, "a picture")
    model = classifier(set_name)
    probs = model.predict([picture])[0]
    # a class of another set (picked before the set changed, or through the API): the predicted one, named below
    heat, shown = grad_cam(model, picture, target if target in model.label_names else None, max_side=OVERLAY_MAX_SIDE)
    layer = layer if layer in feature_layers(model) else feature_layers(model)[-1]
    caption = f"Grad-CAM of **{shown}** at the last stage; feature maps of `{layer}` (its 16 most active channels)."
    return probs, overlay(picture, heat), feature_maps(model, picture, layer), caption


def set_changed(set_name: str):
    """The class and layer choices of the newly picked set."""
    labels = [PREDICTED, *CHARACTER_SETS[set_name]]
    return gr.Dropdown(choices=labels, value=PREDICTED), gr.Dropdown(value=DEFAULT_LAYER)


def examples(set_name: str) -> list[list[str]]:
    folder = LOCAL_EXAMPLES / set_name / "predict"
    return [[set_name, str(p)] for p in sorted(folder.iterdir())[:4]] if folder.is_dir() else []


def build_demo() -> gr.Blocks:
    first = next(iter(CHARACTER_SETS))
    with gr.Blocks(title="Characters, explained", delete_cache=SPACE_DELETE_CACHE) as demo:
        gr.Markdown(
            "# Which character is it, and why?\nSmall networks fine-tuned on a few dozen pictures per "
            "character; their measured accuracy per class is in each model card. Grad-CAM shows where the "
            "evidence for a class lies; feature maps show what one layer responds to."
        )
        with gr.Row():
            set_name = gr.Radio([(CHARACTER_TITLES[s], s) for s in CHARACTER_SETS], value=first, label="Set")
            target = gr.Dropdown([PREDICTED, *CHARACTER_SETS[first]], value=PREDICTED, label="Explain class")
            layer = gr.Dropdown(list(LAYERS), value=DEFAULT_LAYER, label="Feature maps of layer (shallow to deep)")
        with gr.Row():
            picture = image_upload(label="Picture")
            probs = gr.Label(num_top_classes=4, label="Prediction")
        with gr.Row():
            cam = gr.Image(label="Grad-CAM")
            maps = gr.Image(label="Feature maps")
        caption = gr.Markdown()
        set_name.change(set_changed, set_name, [target, layer])
        gr.Button("Classify and explain", variant="primary").click(
            explain, [set_name, picture, target, layer], [probs, cam, maps, caption], api_name="explain"
        )
        local = [row for name in CHARACTER_SETS for row in examples(name)]
        if local:
            gr.Examples(local, inputs=[set_name, picture], label="Examples (local data only, never shipped)")
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch()
