package session

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigProvision: with store = "redis", Provision reads the
// encryption key and the passwords once and reports each source it cannot
// use by its key, never with the value; Validate reports a missing source.
// What Provision read stays: the variables unset afterwards change
// nothing.
func TestConfigProvision(t *testing.T) {
	const (
		key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
		pw  = "redis-s3cret-value"
	)
	t.Setenv("WXGATE_TEST_KEY", key)
	t.Setenv("WXGATE_TEST_PW", pw)
	t.Setenv("WXGATE_TEST_BAD_KEY", pw)
	dir := t.TempDir()
	keyFile, emptyFile, twoKeys, badSecond, repeated := filepath.Join(dir, "key"), filepath.Join(dir, "empty"), filepath.Join(dir, "two"), filepath.Join(dir, "bad-second"), filepath.Join(dir, "repeated")
	const key2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
	for name, body := range map[string]string{
		keyFile: key + "\n", emptyFile: "", twoKeys: key2 + "\n" + key + "\n",
		badSecond: key + "\n" + pw + "\n", repeated: key + " " + key2 + " " + key,
	} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		cfg       Config
		provision string // the error's text; "" for none
		validate  string // a key Validate's error names; "" for none
	}{
		{"env", Config{Store: "redis", EncryptionKeyEnv: "WXGATE_TEST_KEY", Redis: RedisConfig{PasswordEnv: "WXGATE_TEST_PW"}}, "", ""},
		{"file", Config{Store: "redis", EncryptionKeyFile: keyFile}, "", ""},
		{"memory reads nothing", Config{Store: "memory", EncryptionKeyEnv: "WXGATE_TEST_UNSET"}, "", "session.encryption_key_env: set, but store is \"memory\""},
		{"no source", Config{Store: "redis"}, "", "session.encryption_key_env: required"},
		{"env unset", Config{Store: "redis", EncryptionKeyEnv: "WXGATE_TEST_UNSET"},
			"session.encryption_key_env: environment variable WXGATE_TEST_UNSET is empty or unset", ""},
		{"not a key", Config{Store: "redis", EncryptionKeyEnv: "WXGATE_TEST_BAD_KEY"},
			"session.encryption_key_env: environment variable WXGATE_TEST_BAD_KEY: not base64 of 32 bytes (make one with: head -c32 /dev/urandom | base64)", ""},
		{"file empty", Config{Store: "redis", EncryptionKeyFile: emptyFile}, "session.encryption_key_file: " + emptyFile + " is empty", ""},
		{"two keys", Config{Store: "redis", EncryptionKeyFile: twoKeys}, "", ""},
		{"second key bad", Config{Store: "redis", EncryptionKeyFile: badSecond},
			"session.encryption_key_file: " + badSecond + ": key 2 of 2: not base64 of 32 bytes (make one with: head -c32 /dev/urandom | base64)", ""},
		{"key repeated", Config{Store: "redis", EncryptionKeyFile: repeated}, "session.encryption_key_file: " + repeated + ": key 3 repeats key 1", ""},
		{"password unset", Config{Store: "redis", EncryptionKeyEnv: "WXGATE_TEST_KEY", Redis: RedisConfig{PasswordEnv: "WXGATE_TEST_UNSET"}},
			"session.redis.password_env: environment variable WXGATE_TEST_UNSET is empty or unset", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.SetDefaults()
			err := c.Provision()
			if got := errText(err); got != tc.provision {
				t.Errorf("Provision() = %q, want %q", got, tc.provision)
			}
			if err != nil && (strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), key)) {
				t.Errorf("Provision() = %v, which shows a secret", err)
			}
			verr := c.Validate()
			if tc.validate == "" && verr != nil || tc.validate != "" && !strings.Contains(errText(verr), tc.validate) {
				t.Errorf("Validate() = %v, want an error naming %q: %t", verr, tc.validate, tc.validate != "")
			}
			if tc.provision != "" || tc.validate != "" {
				return
			}
			t.Setenv("WXGATE_TEST_KEY", "")
			t.Setenv("WXGATE_TEST_PW", "")
			wantKeys := 1
			if c.EncryptionKeyFile == twoKeys {
				wantKeys = 2
			}
			if len(c.keys) != wantKeys || len(c.keys[0]) != 32 {
				t.Errorf("encryption keys after Provision = %d, want %d of 32 bytes", len(c.keys), wantKeys)
			}
			want := ""
			if c.Redis.PasswordEnv != "" {
				want = pw
			}
			if got, err := c.Redis.password(); err != nil || got != want {
				t.Errorf("password() after the variable went = %q, %v; want %q, as Provision read it", got, err, want)
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
