package kea

import (
	"bytes"
	"fmt"
)

// cleanError is a lexical error at a byte offset.
type cleanError struct {
	off int
	msg string
}

// clean turns Kea's JSON dialect into JSON: comments (`#` and `//` to the
// end of the line, `/* */`) outside strings become spaces, and so do
// extraneous commas (before `}` or `]`), whose offsets it returns. The
// result has the length and the line breaks of data, so offsets and
// line:column positions in it are those of the original file. Data that is
// JSON already comes back unchanged.
func clean(data []byte) ([]byte, []int, *cleanError) {
	out := bytes.Clone(data)
	blank := func(from, to int) {
		for i := from; i < to; i++ {
			if out[i] != '\n' {
				out[i] = ' '
			}
		}
	}
	inString := false
	for i := 0; i < len(out); i++ {
		c := out[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c == '#', c == '/' && i+1 < len(out) && out[i+1] == '/':
			end := bytes.IndexByte(out[i:], '\n')
			if end < 0 {
				end = len(out) - i
			}
			blank(i, i+end)
			i += end - 1
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			end := bytes.Index(out[i+2:], []byte("*/"))
			if end < 0 {
				return nil, nil, &cleanError{off: i, msg: "comment /* never closed by */"}
			}
			blank(i, i+2+end+2)
			i += 2 + end + 1
		case c == '<' && i+1 < len(out) && out[i+1] == '?':
			return nil, nil, &cleanError{off: i, msg: "<?include?> directives are not supported: inline the included file"}
		}
	}
	var commas []int
	inString = false
	for i := 0; i < len(out); i++ {
		c := out[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case ',':
			j := i + 1
			for j < len(out) && (out[j] == ' ' || out[j] == '\t' || out[j] == '\n' || out[j] == '\r') {
				j++
			}
			if j < len(out) && (out[j] == '}' || out[j] == ']') {
				out[i] = ' '
				commas = append(commas, i)
			}
		}
	}
	return out, commas, nil
}

// lineCol names byte offset off of data as "line L column C", both from 1,
// the column counted in bytes.
func lineCol(data []byte, off int) string {
	off = max(0, min(off, len(data)))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Sprintf("line %d column %d", line, col)
}

// lineCols is lineCol for many increasing offsets, in one pass.
func lineCols(data []byte, offs []int) []string {
	out := make([]string, 0, len(offs))
	line, lineStart, pos := 1, 0, 0
	for _, off := range offs {
		for ; pos < off && pos < len(data); pos++ {
			if data[pos] == '\n' {
				line, lineStart = line+1, pos+1
			}
		}
		out = append(out, fmt.Sprintf("line %d column %d", line, off-lineStart+1))
	}
	return out
}
