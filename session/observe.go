package session

import (
	"context"
	"errors"
	"time"
)

// Observe wraps a store so that onError hears of every failure (not
// ErrNotFound) with the operation's name: the metrics hook.
func Observe(s Store, onError func(op string)) Store {
	return &observed{s: s, onError: onError}
}

type observed struct {
	s       Store
	onError func(op string)
}

func (o *observed) note(op string, err error) error {
	if err != nil && !errors.Is(err, ErrNotFound) {
		o.onError(op)
	}
	return err
}

func (o *observed) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := o.s.Get(ctx, key)
	return b, o.note("get", err)
}

func (o *observed) Set(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	return o.note("set", o.s.Set(ctx, key, v, ttl))
}

func (o *observed) SetNX(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	ok, err := o.s.SetNX(ctx, key, v, ttl)
	return ok, o.note("setnx", err)
}

func (o *observed) Replace(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	ok, err := o.s.Replace(ctx, key, v, ttl)
	return ok, o.note("replace", err)
}

func (o *observed) Swap(ctx context.Context, key string, old, v []byte, ttl time.Duration) (bool, error) {
	ok, err := o.s.Swap(ctx, key, old, v, ttl)
	return ok, o.note("swap", err)
}

func (o *observed) Delete(ctx context.Context, key string) error {
	return o.note("delete", o.s.Delete(ctx, key))
}

func (o *observed) AddMember(ctx context.Context, key, m string, until, now time.Time, limit int) ([]string, error) {
	over, err := o.s.AddMember(ctx, key, m, until, now, limit)
	return over, o.note("add_member", err)
}

func (o *observed) Members(ctx context.Context, key string) ([]string, error) {
	m, err := o.s.Members(ctx, key)
	return m, o.note("members", err)
}

func (o *observed) RemoveMember(ctx context.Context, key, m string) error {
	return o.note("remove_member", o.s.RemoveMember(ctx, key, m))
}

// Unwrap returns the observed store.
func (o *observed) Unwrap() Store { return o.s }

// load passes a cached read on to the observed store (cache.go).
func (o *observed) load(ctx context.Context, key string, decode func([]byte) (any, error)) (any, []byte, error) {
	v, raw, err := loadRecord(ctx, o.s, key, decode)
	return v, raw, o.note("get", err)
}
