package lambdamain

import "testing"

// TestMemoryLimit: the Go memory limit is 90% of the function's memory;
// none when GOMEMLIMIT is set or the size is missing or not a number.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int64
		ok   bool
	}{
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}, 966367641, true},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}, 241591910, true},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "GOMEMLIMIT": "100MiB"}, 0, false},
		{map[string]string{}, 0, false},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots"}, 0, false},
		{map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "0"}, 0, false},
	} {
		got, ok := MemoryLimit(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		if got != tc.want || ok != tc.ok {
			t.Errorf("%v: %d %v, want %d %v", tc.env, got, ok, tc.want, tc.ok)
		}
	}
}
