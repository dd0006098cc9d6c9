# The two commands of the README. Each creates .venv if missing and installs the project into it first.
#   make demo   run the demo end to end on CPU (outputs under outputs/demo/)
#   make test   ruff + pytest (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall whenever the dependency declarations change.
STAMP := $(VENV)/.monai-xai-installed
# The MONAI Deploy environment: a layer over $(VENV) (see constraints-deploy.txt for why it is separate).
DEPLOY_VENV ?= .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.monai-xai-deploy-installed

.PHONY: install deploy-env demo test lint clean

install: $(STAMP)

deploy-env: $(DEPLOY_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,label,dicom,export,nnunet,hdbet]'
	# the Quantus parity tests' reference (extra 'parity'); --no-deps: its opencv-python would replace the pinned
	# headless cv2, and every other requirement is installed above
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt quantus
	touch $@

# monai.deploy is installed into the layer's own `monai` package folder, so MONAI itself is installed there again
# (1.6.1, pure Python, no dependencies): a package folder cannot be split over two site-packages.
$(DEPLOY_STAMP): $(STAMP) constraints.txt constraints-deploy.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	test "$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])')" = \
		"$$($(DEPLOY_VENV)/bin/python -c 'import sys; print(sys.version_info[:2])')" \
		|| { echo "$(DEPLOY_VENV) and $(VENV) must use one Python version (it uses $(VENV)'s packages)"; exit 1; }
	base=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	layer=$$($(DEPLOY_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "import site; site.addsitedir('$$base')" > "$$layer/zz_monai_xai_base_venv.pth"
	sed -e '/^protobuf==/d' -e '/^pydicom==/d' -e '/^highdicom==/d' constraints.txt > $(DEPLOY_VENV)/base-constraints.txt
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -c $(DEPLOY_VENV)/base-constraints.txt -c constraints-deploy.txt \
		--ignore-installed --no-deps monai pydicom
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -c $(DEPLOY_VENV)/base-constraints.txt -c constraints-deploy.txt \
		monai-deploy-app-sdk highdicom
	touch $@

demo: $(STAMP)
	$(BIN)/monai-xai demo

test: $(STAMP) $(DEPLOY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) outputs .pytest_cache .ruff_cache
