// Package deploytest checks the files that deploy wxgate: the Dockerfile
// (with buildkit's parser and linter) and the Kubernetes manifests under
// deploy/kubernetes (against the API's schemas). It is a module of its own
// so that the Kubernetes and buildkit libraries its tests need never enter
// wxgate's own go.mod: `make deploytest` runs it.
package deploytest
