# One command sets everything up and serves the demo; one runs the tests.
#   make demo   venv + install, prepare LDC crops and slides, train the crop classifier and the
#               cell counter if missing, serve the cells Space on :7860
#   make test   the test suite (what CI runs)
#   make nuclei-demo   the same for the nuclei U-Net (prepare DSB2018, train, serve)
#   make pets-demo     the same for cat / dog / neither with the live webcam tab
#   make characters-demo   the same for the three character classifiers with Grad-CAM
#   make brain-demo    the same for brain MRI: gate, tumour type with Grad-CAM, bilingual chat
PYTHON ?= python3
export GRADIO_ANALYTICS_ENABLED ?= False
VENV ?= .venv
PY := $(VENV)/bin/python
LDC_DIR ?= ../shared/data/ldc/Original Dataset
DSB_DIR ?= ../shared/data/dsb2018/stage1_train
MODEL := models/ldc-live-dead
BASELINE := models/ldc-live-dead-seed-cnn
NUCLEI := models/nuclei-unet
VIABILITY := models/ldc-viability
PETS := models/cats-dogs
PETS_DIR ?= ../shared/data/cats-dogs/train
CHARACTERS_DIR ?= ../shared/data/characters
CHARACTER_SETS := pokemon dragonball fairytail
SPACE ?= cells
# a prepared dataset is rebuilt (and the models trained on it retrained) when its preparation code changes
DATA := src/imagezoo/data

.PHONY: setup data model baseline demo test benchmark push-space clean nuclei-data nuclei-model nuclei-demo \
	nuclei-benchmark viability-data viability-model pets-data pets-model pets-demo webcam-benchmark \
	characters-data characters-models characters-demo brain-data brain-models brain-demo chat-benchmark \
	chat-generation-benchmark

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray]"
	touch $@

setup: $(VENV)/.installed

data/ldc-crops/README.md: $(VENV)/.installed training/prepare_ldc.py $(addprefix $(DATA)/,__init__.py ldc.py near_duplicates.py splits.py voc.py)
	$(PY) training/prepare_ldc.py --ldc-dir "$(LDC_DIR)" --out data/ldc-crops --examples-dir spaces/cells/examples

data: data/ldc-crops/README.md

$(MODEL)/model.safetensors: data/ldc-crops/README.md
	$(PY) training/train_classifier.py --task ldc-live-dead

model: $(MODEL)/model.safetensors

# The seed CNN baseline (about 17 minutes on 2 CPU cores); retrain the main model afterwards
# (rm -r $(MODEL) && make model) so its card lists the baseline beside it.
baseline: data/ldc-crops/README.md
	$(PY) training/train_classifier.py --task ldc-live-dead --arch seed-cnn

data/ldc-slides/README.md: $(VENV)/.installed training/prepare_ldc_slides.py $(addprefix $(DATA)/,__init__.py ldc.py near_duplicates.py splits.py voc.py)
	$(PY) training/prepare_ldc_slides.py --ldc-dir "$(LDC_DIR)" --out data/ldc-slides --examples-dir spaces/cells/examples/slides

viability-data: data/ldc-slides/README.md

# quick CPU recipe; its design (b) labels cells with the crop classifier, so that is trained first
$(VIABILITY)/model.safetensors: data/ldc-slides/README.md $(MODEL)/model.safetensors
	$(PY) training/train_cell_counter.py --task ldc-viability

viability-model: $(VIABILITY)/model.safetensors

demo: model viability-model
	$(PY) spaces/$(SPACE)/app.py

data/dsb2018-nuclei/README.md: $(VENV)/.installed training/prepare_dsb2018.py $(addprefix $(DATA)/,__init__.py dsb2018.py near_duplicates.py splits.py)
	$(PY) training/prepare_dsb2018.py --dsb-dir "$(DSB_DIR)" --out data/dsb2018-nuclei --examples-dir spaces/nuclei/examples

nuclei-data: data/dsb2018-nuclei/README.md

# quick CPU recipe (about 17 minutes on 2 cores: 14 of training, 2.5 of evaluation); `--recipe full` on a GPU
$(NUCLEI)/model.safetensors: data/dsb2018-nuclei/README.md
	$(PY) training/train_segmenter.py --task nuclei-unet

nuclei-model: $(NUCLEI)/model.safetensors

nuclei-demo: nuclei-model
	$(PY) spaces/nuclei/app.py

nuclei-benchmark: nuclei-model
	$(PY) benchmarks/bench_segmenter.py

data/cats-dogs/README.md: $(VENV)/.installed training/prepare_cats_dogs.py $(addprefix $(DATA)/,__init__.py pets.py splits.py synthetic.py)
	$(PY) training/prepare_cats_dogs.py --pets-dir "$(PETS_DIR)" --data-root ../shared/data --out data/cats-dogs \
		--examples-dir spaces/cats_dogs/examples

pets-data: data/cats-dogs/README.md

# quick CPU recipe (about 15 minutes on 2 cores with the open-set evaluation and the ONNX exports)
$(PETS)/model.safetensors: data/cats-dogs/README.md
	$(PY) training/train_classifier.py --task cats-dogs

pets-model: $(PETS)/model.safetensors

pets-demo: pets-model
	$(PY) spaces/cats_dogs/app.py

webcam-benchmark: pets-model
	$(PY) benchmarks/bench_webcam.py

data/characters-%/README.md: $(VENV)/.installed training/prepare_characters.py $(addprefix $(DATA)/,__init__.py characters.py splits.py)
	$(PY) training/prepare_characters.py --set $* --characters-dir "$(CHARACTERS_DIR)" --out data/characters-$*

# quick CPU recipe, a few minutes a set on 2 cores
models/characters-%/model.safetensors: data/characters-%/README.md
	$(PY) training/train_classifier.py --task characters-$*

characters-data: $(CHARACTER_SETS:%=data/characters-%/README.md)

characters-models: $(CHARACTER_SETS:%=models/characters-%/model.safetensors)

characters-demo: characters-models
	$(PY) spaces/characters/app.py

data/brain-tumor-type/README.md: $(VENV)/.installed training/prepare_brain_mri.py \
		$(addprefix $(DATA)/,__init__.py brain.py near_duplicates.py pets.py splits.py synthetic.py)
	$(PY) training/prepare_brain_mri.py --data-root ../shared/data --out-dir data --examples-dir spaces/brain_mri/examples

brain-data: data/brain-tumor-type/README.md

# quick CPU recipes: the type model about 15 minutes on 2 cores, the gate 6 (leave-one-source-out included),
# the yes/no detector 2; then the yes/no comparison writes its section into both cards
models/brain-tumor-type/model.safetensors: data/brain-tumor-type/README.md
	$(PY) training/train_classifier.py --task brain-tumor-type

models/brain-mri-gate/model.safetensors: data/brain-tumor-type/README.md
	$(PY) training/train_gate.py --task brain-mri-gate

models/brain-tumor-detect/tumor_detection.json: models/brain-tumor-type/model.safetensors
	$(PY) training/train_classifier.py --task brain-tumor-detect
	$(PY) training/compare_tumor_detection.py

brain-models: models/brain-tumor-type/model.safetensors models/brain-mri-gate/model.safetensors \
	models/brain-tumor-detect/tumor_detection.json

brain-demo: brain-models
	$(PY) spaces/brain_mri/app.py

# the chat on its four question sets and its follow-up conversations (README, "The chat"): benchmarks/results/chat*.json
chat-benchmark: setup
	$(PY) benchmarks/bench_chat.py
	$(PY) benchmarks/bench_chat.py --questions tests/data/chat_dev_questions.json --out benchmarks/results/chat_dev.json --followups ''
	$(PY) benchmarks/bench_chat.py --questions tests/data/chat_blind_questions.json --out benchmarks/results/chat_blind.json --followups ''
	$(PY) benchmarks/bench_chat.py --questions tests/data/chat_blind2_questions.json --out benchmarks/results/chat_blind2.json --followups ''

# the chat's optional generation mode (SmolLM2-135M) on the second question set: about 10 minutes
chat-generation-benchmark: setup
	$(PY) benchmarks/bench_chat_generation.py

test: setup
	$(PY) -m pytest

benchmark: model
	$(PY) benchmarks/bench_batch_predict.py

push-space:
	$(PY) -c "from imagezoo.hub import push_space; print(push_space('spaces/$(SPACE)', '$(REPO)'))"

clean:
	rm -rf data models outputs cache
