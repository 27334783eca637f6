package session_test

import (
	"reflect"
	"testing"

	"github.com/wxgate/wxgate/session"
)

// TestManagerIsTheOnlyDoor: nothing the Manager or Issuer hands out is the
// store itself, so callers (proxy) go through what session offers: leases,
// a person's logins, the shared part for app tokens, and the optional
// capabilities (issue 10: proxy reached into the raw store through
// Manager.Store() and built its key formats itself).
func TestManagerIsTheOnlyDoor(t *testing.T) {
	store := reflect.TypeFor[session.Store]()
	for _, typ := range []reflect.Type{reflect.TypeFor[*session.Manager](), reflect.TypeFor[*session.Issuer](),
		reflect.TypeFor[session.Lease](), reflect.TypeFor[session.Shared]()} {
		for i := range typ.NumMethod() {
			m := typ.Method(i)
			for j := range m.Type.NumOut() {
				if out := m.Type.Out(j); out.Implements(store) || (out.Kind() == reflect.Interface && store.Implements(out) && out.NumMethod() >= store.NumMethod()) {
					t.Errorf("%s.%s returns %s, a session.Store: the store's door is the Manager", typ, m.Name, out)
				}
			}
		}
		st := typ
		if st.Kind() == reflect.Pointer {
			st = st.Elem()
		}
		for i := range st.NumField() {
			if f := st.Field(i); f.IsExported() && f.Type.Implements(store) {
				t.Errorf("%s has the exported field %s, a session.Store", typ, f.Name)
			}
		}
	}
}
