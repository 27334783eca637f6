package secret

import "testing"

func TestEnvName(t *testing.T) {
	const hidden = "(not a variable name: is the secret itself in this key?)"
	for _, tc := range []struct{ in, want string }{
		{"WXGATE_OA_SECRET", "WXGATE_OA_SECRET"},
		{"_x1", "_x1"},
		{"a", "a"},
		{"1ABC", hidden},
		{"0123456789abcdef0123456789abcdef", hidden},
		{"s3cr3t-with-dash", hidden},
		{"with space", hidden},
		{"", hidden},
		{"a1b2c3d4e5f60718293a4b5c6d7e8f90", hidden}, // an AppSecret
		{"wxgate_oa_secret_for_the_shop", "wxgate_oa_secret_for_the_shop"},
	} {
		if got := EnvName(tc.in); got != tc.want {
			t.Errorf("EnvName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
