package session

import (
	"context"
	"fmt"
	"time"
)

// TicketTTL is how long a hand-off ticket is valid (DESIGN.md "Many hosts,
// one callback domain").
const TicketTTL = 30 * time.Second

// Ticket hands a login to a browser on another host: the auth host's
// callback (for a login started elsewhere) or a mini program (for its
// web-view) makes one, and /handoff on Host turns it into a new session
// there, once.
type Ticket struct {
	// Host is the authority (host[:port], lowercase, without the scheme's
	// default port) the ticket may be redeemed on.
	Host string `json:"host"`
	// Binding, if set, is the Hash of the binding cookie of the browser on
	// Host that started the login: a ticket carried to another browser
	// logs nobody in there. Web-view tickets have none (the web-view has
	// no cookie of its own yet).
	Binding  string    `json:"binding,omitempty"`
	Identity Identity  `json:"identity"`
	Tokens   *Tokens   `json:"tokens,omitempty"`
	Expires  time.Time `json:"expires"`
}

// Key prefixes of tickets: the record, and its used mark.
const (
	ticketPrefix     = "ticket:"
	ticketUsedPrefix = "ticket-used:"
)

// SaveTicket stores t for TicketTTL under a new random ticket, which it
// returns; the store keeps only the ticket's Hash.
func (m *Manager) SaveTicket(ctx context.Context, t *Ticket) (string, error) {
	raw := NewID()
	t.Expires = m.Now().Add(TicketTTL)
	if err := m.put(ctx, "saving hand-off ticket", ticketPrefix+Hash(raw), t, TicketTTL); err != nil {
		return "", err
	}
	return raw, nil
}

// Ticket returns the ticket raw, used or not, or ErrNotFound if it is
// malformed, unknown, or past its end by the Manager's clock.
func (m *Manager) Ticket(ctx context.Context, raw string) (*Ticket, error) {
	if !ValidID(raw) {
		return nil, ErrNotFound
	}
	var t Ticket
	if err := m.get(ctx, "hand-off ticket", ticketPrefix+Hash(raw), &t); err != nil {
		return nil, err
	}
	if !m.Now().Before(t.Expires) {
		return nil, ErrNotFound
	}
	return &t, nil
}

// ClaimTicket marks the ticket raw as used and reports whether this caller
// was the first: the store's SetNX makes that hold across replicas. The
// record stays until its TTL, so that a repeated request of the browser
// that used it can be recognised.
func (m *Manager) ClaimTicket(ctx context.Context, raw string) (bool, error) {
	if !ValidID(raw) {
		return false, nil
	}
	ok, err := m.store.SetNX(ctx, ticketUsedPrefix+Hash(raw), []byte{1}, TicketTTL)
	if err != nil {
		return false, fmt.Errorf("claiming hand-off ticket: %w", err)
	}
	return ok, nil
}

// ReleaseTicket gives back the claim on the ticket raw that its caller won
// but could not finish a login with (the store failed creating the
// session), so that the browser's retry finishes it instead of finding the
// ticket used.
func (m *Manager) ReleaseTicket(ctx context.Context, raw string) error {
	if !ValidID(raw) {
		return nil
	}
	if err := m.store.Delete(ctx, ticketUsedPrefix+Hash(raw)); err != nil {
		return fmt.Errorf("releasing hand-off ticket: %w", err)
	}
	return nil
}
