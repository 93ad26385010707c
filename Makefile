# Thin wrappers. The two commands of the README:
#   make demo   provision a local podman host with site.yml and print its URL
#   make test   lint, then every molecule scenario
# Both install what they need first (apt packages, .venv, base image).

SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

VENV       := $(CURDIR)/.venv
DISTRO     ?= $(or $(MOLECULE_DISTRO),debian12)
DEMO_PORT  ?= 8080
SCENARIO   ?=
TEST_JOBS  ?= $(if $(SCENARIO),1,2)
# Scenarios `make test` runs, in order: `name` on DISTRO, `name@distro` on
# that distro's image.
SCENARIOS  := default default@debian13 tls managers multi-app cluster
# The distros whose base images the scenarios to run need.
TEST_DISTROS = $(sort $(DISTRO) $(foreach s,$(or $(SCENARIO),$(SCENARIOS)),$(word 2,$(subst @, ,$(s)))))

APT_PACKAGES := podman runc aardvark-dns debootstrap python3-venv curl
BENCH_APT_PACKAGES := wrk openssh-client
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

export MOLECULE_DISTRO := $(DISTRO)
export CONTAINERS_CONF := $(CURDIR)/molecule/resources/containers.conf
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_FORCE_COLOR := $(if $(CI),0,1)
export PY_COLORS := $(if $(CI),0,1)

.PHONY: help bootstrap deps venv image demo demo-down test lint bench clean

help:
	@echo "make demo        provision the local demo host and print its URL"
	@echo "make demo-down   remove the demo host"
	@echo "make test        lint and run every molecule scenario (SCENARIO=name or name@debian13 for one)"
	@echo "make lint        ansible-lint (production profile) and yamllint"
	@echo "make bench       benchmarks on local podman hosts (about 10 minutes)"

bootstrap: deps venv image

# Debian packages of the controller, installed only when missing.
deps:
	@missing=""
	for p in $(APT_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done
	if [ -n "$$missing" ]; then
	  echo "installing:$$missing"
	  $(SUDO) apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/ansible-galaxy collection install --offline -r requirements.yml >/dev/null
	touch $@

image: deps
	molecule/resources/build-image.sh $(DISTRO)

demo: bootstrap
	ansible-playbook playbooks/demo_up.yml -e demo_port=$(DEMO_PORT) -e demo_distro=$(DISTRO)
	ansible-playbook site.yml
	curl -fsS --retry 5 --retry-delay 1 --retry-all-errors http://127.0.0.1:$(DEMO_PORT)/ && echo
	echo "The demo app answers at http://127.0.0.1:$(DEMO_PORT)/"

demo-down: venv
	ansible-playbook playbooks/demo_down.yml

lint: venv
	yamllint --strict .
	ansible-lint

# Provisioning, serving (wrk), worker counts, rolling restart and deploy
# timings on local podman hosts reached over SSH: a table on stdout and
# bench/results/<timestamp>.json, .md and .png. Exits 1 if a target is missed.
# wrk and ssh join the Debian packages `deps` installs (a target-specific
# value reaches the prerequisites).
bench: APT_PACKAGES += $(BENCH_APT_PACKAGES)
bench: bootstrap $(VENV)/.bench-installed
	cd bench && python run.py $(BENCH_ARGS)

$(VENV)/.bench-installed: bench/requirements.txt $(VENV)/.installed
	$(VENV)/bin/pip install -q -r bench/requirements.txt
	touch $@

# Each scenario is one pytest test that runs `molecule test`, so the run ends
# with pytest's summary line. SCENARIO=name runs just that one, without lint.
# The full suite runs in TEST_JOBS lanes at once (the scenarios wait on
# containers as much as they compute); one lane streams molecule's output.
test: bootstrap
	for distro in $(TEST_DISTROS); do molecule/resources/build-image.sh $$distro; done
	SCENARIOS="$(or $(SCENARIO),$(SCENARIOS))" LINT="$(if $(SCENARIO),0,1)" TEST_JOBS=$(TEST_JOBS) \
	  pytest -p no:cacheprovider -o console_output_style=classic --durations=0 \
	  $(if $(filter 1,$(TEST_JOBS)),--capture=no,-n $(TEST_JOBS) --dist loadgroup) \
	  molecule/test_scenarios.py

clean: demo-down
	rm -rf $(VENV) .cache
