module github.com/wxgate/wxgate

go 1.26.8
