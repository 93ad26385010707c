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
# Base images the tests need: both distros (a scenario on one distro also
# rebuilds a host on the other one), and DISTRO's warm image (its packages
# preinstalled) for the scenarios that do not show the first install.
TEST_DISTROS = debian12 debian13

APT_PACKAGES := podman runc aardvark-dns debootstrap python3-venv curl openssh-client zstd
BENCH_APT_PACKAGES := wrk
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

export MOLECULE_DISTRO := $(DISTRO)
export CONTAINERS_CONF := $(CURDIR)/molecule/resources/containers.conf
# The test hosts are reached over SSH (see `ssh`).
TEST_SSH   := $(CURDIR)/.cache/ssh
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_FORCE_COLOR := $(if $(CI),0,1)
export PY_COLORS := $(if $(CI),0,1)

.PHONY: help bootstrap deps venv image ssh demo demo-down test lint docs bench clean

help:
	@echo "make demo        provision the local demo host and print its URL"
	@echo "make demo-down   remove the demo host"
	@echo "make test        lint and run every molecule scenario (SCENARIO=name or name@debian13 for one)"
	@echo "make lint        ansible-lint (production profile), yamllint, ruff, role README tables"
	@echo "make docs        regenerate the role READMEs' variable tables"
	@echo "make bench       benchmarks on local podman hosts (about 45 minutes)"

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

# The test hosts are reached the way servers are, over SSH with pipelining
# and one multiplexed connection per host, but without a network between
# this machine and them: ssh's ProxyCommand starts sshd in inetd mode inside
# the container (`podman exec`), once per connection. A key of this
# checkout's own, and the ssh_config Ansible and testinfra both read.
ssh: deps
	mkdir -p -m 0700 $(TEST_SSH)
	[ -f $(TEST_SSH)/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C asgi-provisioner-tests -f $(TEST_SSH)/id_ed25519
	printf '%s\n' \
	  '# Written by `make ssh`: how Ansible and testinfra reach the test hosts.' \
	  'Host asgi-*' \
	  '  User root' \
	  '  IdentityFile $(TEST_SSH)/id_ed25519' \
	  '  IdentitiesOnly yes' \
	  '  ProxyCommand $(CURDIR)/molecule/resources/ssh-proxy %h $(TEST_SSH)/id_ed25519.pub' \
	  '  StrictHostKeyChecking no' \
	  '  UserKnownHostsFile /dev/null' \
	  '  LogLevel ERROR' \
	  '  ControlMaster auto' \
	  '  ControlPath $(TEST_SSH)/cp-%C' \
	  '  ControlPersist 600' > $(TEST_SSH)/config

demo: bootstrap
	ansible-playbook playbooks/demo_up.yml -e demo_port=$(DEMO_PORT) -e demo_distro=$(DISTRO)
	ansible-playbook site.yml
	curl -fsS --retry 5 --retry-delay 1 --retry-all-errors http://127.0.0.1:$(DEMO_PORT)/ && echo
	echo "The demo app answers at http://127.0.0.1:$(DEMO_PORT)/"

demo-down: venv
	ansible-playbook playbooks/demo_down.yml

# ansible-lint puts the user's ~/.ansible/collections first: a home of its
# own keeps an older installed copy of this collection from shadowing the
# checkout (.collections).
lint: venv
	yamllint --strict .
	ANSIBLE_HOME=$(CURDIR)/.cache/ansible-lint-home ansible-lint
	ruff check bench molecule roles examples plugins
	ruff format --check roles/app/files
	python molecule/role_docs.py --check

# The role READMEs' variable tables, from each role's argument specs and
# defaults (make lint fails when one is stale).
docs: venv
	python molecule/role_docs.py

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
# with pytest's summary line, after a table of each scenario's molecule
# steps (molecule/timings.py, a pytest plugin). SCENARIO=name runs just that one, without lint.
# The full suite runs in TEST_JOBS lanes at once (the scenarios wait on
# containers as much as they compute); one lane streams molecule's output.
test: bootstrap ssh
	for distro in $(TEST_DISTROS); do molecule/resources/build-image.sh $$distro; done
	molecule/resources/build-image.sh $(DISTRO) warm
	SCENARIOS="$(or $(SCENARIO),$(SCENARIOS))" LINT="$(if $(SCENARIO),0,1)" TEST_JOBS=$(TEST_JOBS) \
	  PYTHONPATH=molecule pytest -p no:cacheprovider -p timings -o console_output_style=classic --durations=0 \
	  $(if $(filter 1,$(TEST_JOBS)),--capture=no,-n $(TEST_JOBS) --dist loadscope) \
	  molecule/test_scenarios.py

clean: demo-down
	rm -rf $(VENV) .cache
